"""The eSpeak NG server of the demo corpus, run as its own lean process: `python -m auttention.espeak`.

It initialises eSpeak NG (the espeakng-loader wheel's library and data, through ctypes: nothing else is
imported, so forking it is cheap) once, and answers each request from a child forked off that pristine state,
so that a clip depends only on its own request. Requests are JSON lines on stdin ({text: SSML, voice, params:
[[espeak_PARAMETER, value], ...], seed}); each answer on stdout is struct "<iI" (status, length) plus the
payload: int16 samples at the library's rate (status 0; the first answer is that rate, "<i") or a UTF-8 error
message (status 1). The client is auttention.democorpus's _EspeakServer.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from typing import Any, BinaryIO

import espeakng_loader

AUDIO_OUTPUT_SYNCHRONOUS, INITIALIZE_DONT_EXIT = 2, 0x8000
POS_CHARACTER, CHARS_UTF8, SSML = 1, 1, 0x10
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def answer(out: BinaryIO, status: int, payload: bytes) -> None:
    """One answer: (status, length) and the payload."""
    out.write(struct.pack("<iI", status, len(payload)) + payload)
    out.flush()


class Synthesiser:
    """eSpeak NG initialised once, German loaded, its audio collected by a callback."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.lib = lib
        self.rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), INITIALIZE_DONT_EXIT
        )
        if self.rate <= 0:
            return
        lib.espeak_SetVoiceByName(b"de")  # load the German dictionary once, before forking
        self.seed_fn = getattr(lib, "espeak_ng_SetRandSeed", None)
        self.chunks: list[bytes] = []
        self.callback = CALLBACK(self._collect)  # kept: eSpeak holds only the C pointer
        lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if wav and n > 0:
            self.chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    def __call__(self, req: dict[str, Any]) -> bytes:
        """The int16 samples of one request."""
        lib = self.lib
        if self.seed_fn is not None:
            self.seed_fn(ctypes.c_long(req["seed"]))
        if lib.espeak_SetVoiceByName(req["voice"].encode()) != 0:
            raise RuntimeError("unknown eSpeak NG voice " + req["voice"])
        for key, value in req["params"]:
            lib.espeak_SetParameter(key, value, 0)
        text = req["text"].encode() + b"\0"
        err = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8 | SSML, None, None)
        if err != 0 or lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        return b"".join(self.chunks)


def in_child(synthesise: Synthesiser, req: dict[str, Any]) -> tuple[int, bytes]:
    """(status, payload) of a request synthesised in a child forked off the pristine state."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            data = struct.pack("<i", 0) + synthesise(req)
        except Exception as exc:  # noqa: BLE001 - whatever failed goes back to the client as its message
            data = struct.pack("<i", 1) + str(exc).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or len(data) < 4:
        return 1, b"synthesis child died with status %d" % status
    return struct.unpack("<i", data[:4])[0], data[4:]


def main() -> None:
    """Serve the requests on stdin until it closes."""
    out = sys.stdout.buffer
    synthesise = Synthesiser()
    if synthesise.rate <= 0:
        answer(out, 1, b"espeak_Initialize failed")
        sys.exit(1)
    answer(out, 0, struct.pack("<i", synthesise.rate))
    for line in sys.stdin.buffer:
        req = json.loads(line)
        if not hasattr(os, "fork"):  # no pristine state to start from: output depends on history
            try:
                synthesise.chunks.clear()
                answer(out, 0, synthesise(req))
            except Exception as exc:  # noqa: BLE001 - whatever failed goes back to the client as its message
                answer(out, 1, str(exc).encode())
            continue
        answer(out, *in_child(synthesise, req))


if __name__ == "__main__":
    main()
