"""Generate the demo corpus: German read speech from eSpeak NG whose cues follow a latent sleepiness.

The corpus is laid out as ComParE 2019 ships its Continuous Sleepiness corpus
(``wav/{train,devel,test}_NNNN.wav`` and ``lab/labels.csv``), plus
``lab/speakers.csv`` (``file_name,speaker,partition``) and a README.txt.

How a clip is made (all randomness from ``(seed, speaker, clip)``, never from worker order):

- Speakers: an eSpeak NG German voice variant each, with their own base pitch, pitch range,
  speaking rate, word gap, pause habit, breathiness, spectral tilt, two fixed resonances
  (peaking filters) and a vocal-tract/pitch scale (resampling), and a recording channel
  (level, background-noise level and colour, mains hum, DC offset). Partitions are
  speaker-disjoint (about 40/30/30 % of speakers), stratified over the speakers' mean KSS.
- Labels: every speaker has a mean KSS; a clip's label is that mean plus small noise, rounded
  to 1..9, so speaker identity and sleepiness are confounded as in the real corpus.
- Cues: a latent sleepiness (the label, rescaled to about -1..1, plus noise) makes the speaker
  slower, pause longer and more often, speak lower, flatter, softer, darker and breathier
  (Krajewski et al. 2009; Vogel et al. 2010; Lajambe et al. 2010). Per-speaker offsets in the
  same cues, independent of KSS, and recording variation keep the task far from trivial.

eSpeak NG keeps synthesis state in process-wide statics (measured: the same text synthesised
twice in one process gives different samples and lengths, even after espeak_Terminate and
espeak_Initialize), and its noise generator is seeded from the clock. Every synthesis call
therefore runs in a child forked from a small server process that has initialised eSpeak but
never synthesised, with espeak_ng_SetRandSeed set from the clip's seed, so a clip's samples
depend only on its own parameters, whatever process renders it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape

import espeakng_loader
import numpy as np
import soundfile
import soxr

from .errors import UserError
from .io import atomic_dir

PARTITIONS = ("train", "devel", "test")
ESPEAK_RATE = 22050  # Hz; what espeak_Initialize reports for the bundled voices
MIN_SECONDS = 2.0
MAX_SECONDS = 5.0

# German read-speech prompts: everyday statements, instructions, announcements and
# pilot/controller phrases (the real corpus mixes read text and commands). Most are 40-75
# characters, about 2.5-4 s at a normal rate; short ones are paired up.
SENTENCES: tuple[str, ...] = (
    "Der Zug nach München fährt heute um halb neun von Gleis drei ab.",
    "Bitte schließen Sie die Fenster, bevor Sie das Haus verlassen.",
    "Am Wochenende soll es im Norden kräftig regnen und stürmen.",
    "Meine Schwester hat sich gestern ein neues Fahrrad gekauft.",
    "Der Nordwind und die Sonne stritten sich, wer von ihnen stärker sei.",
    "Die Besprechung beginnt pünktlich um zehn Uhr im großen Saal.",
    "Könnten Sie mir bitte sagen, wie ich zum Bahnhof komme?",
    "Im Herbst fallen die bunten Blätter langsam von den Bäumen.",
    "Das Flugzeug steigt jetzt auf eine Höhe von zehntausend Fuß.",
    "Tower, hier ist Lufthansa vier zwei eins, wir sind bereit zum Start.",
    "Wir haben den ganzen Nachmittag im Garten gearbeitet.",
    "Der Bäcker an der Ecke öffnet jeden Morgen um sechs Uhr.",
    "Nach dem Essen gingen wir noch eine Runde am See spazieren.",
    "Die Kinder spielen auf dem Hof, bis es draußen dunkel wird.",
    "Bitte tragen Sie hier Ihren Namen und das heutige Datum ein.",
    "Der Kaffee ist leider kalt geworden, weil ich telefoniert habe.",
    "In der Bibliothek ist es still, nur das Papier raschelt leise.",
    "Die Straße ist wegen Bauarbeiten bis Ende Mai gesperrt.",
    "Mein Großvater erzählt gern Geschichten aus seiner Jugend.",
    "Der Arzt empfiehlt, jeden Tag zwei Liter Wasser zu trinken.",
    "Das Museum zeigt in diesem Sommer Bilder aus dem Mittelalter.",
    "Auf der Autobahn gab es heute früh einen langen Stau.",
    "Ich habe vergessen, die Blumen auf dem Balkon zu gießen.",
    "Die Katze schläft den ganzen Tag auf dem warmen Sofa.",
    "Fliegen Sie Kurs null neun null und sinken Sie auf viertausend Fuß.",
    "Nächste Woche beginnt für alle Schüler wieder die Schule.",
    "Der Schlüssel liegt wie immer unter der Fußmatte vor der Tür.",
    "Wir treffen uns am Freitagabend vor dem alten Kino.",
    "Die Suppe braucht noch etwas Salz und ein wenig Pfeffer.",
    "Der Wetterbericht meldet für morgen Nebel und leichten Frost.",
    "Seit drei Jahren wohnt sie in einer kleinen Wohnung in Hamburg.",
    "Drücken Sie die grüne Taste, um das Gerät einzuschalten.",
    "Der letzte Bus fährt kurz nach Mitternacht am Rathaus ab.",
    "Die Ärztin hat mir geraten, abends früher schlafen zu gehen.",
    "Im Supermarkt gibt es diese Woche frische Erdbeeren im Angebot.",
    "Das Konzert wurde wegen des Gewitters um eine Stunde verschoben.",
    "Die Brücke über den Fluss wurde vor hundert Jahren gebaut.",
    "Er liest jeden Morgen die Zeitung, bevor er zur Arbeit fährt.",
    "Bitte melden Sie sich zuerst am Empfang im ersten Stock.",
    "Die Sonne ging hinter den Bergen unter, und es wurde kühl.",
    "Unser Nachbar repariert sein Auto immer selbst in der Garage.",
    "Zum Frühstück gibt es Brötchen, Butter, Käse und Marmelade.",
    "Die Prüfung dauert zwei Stunden und beginnt um acht Uhr.",
    "Auf dem Markt verkauft ein Bauer Kartoffeln und frische Eier.",
    "Der Pilot meldet leichte Turbulenzen über den Alpen.",
    "Am Abend saßen wir lange am Feuer und haben Lieder gesungen.",
    "Die Lampe im Flur ist kaputt und muss bald ersetzt werden.",
    "Vergessen Sie nicht, Ihren Ausweis zur Prüfung mitzubringen.",
    "Die Fähre zur Insel legt jede volle Stunde im Hafen ab.",
    "Mein Bruder studiert Maschinenbau an der Universität in Aachen.",
    "Wir müssen das Dach reparieren, bevor der Winter kommt.",
    "Der Hund bellt jedes Mal, wenn der Briefträger klingelt.",
    "Im Winter fahren viele Familien zum Skifahren in die Berge.",
    "Die Tabletten nehmen Sie dreimal täglich nach dem Essen.",
    "Er hat den Termin beim Zahnarzt leider völlig vergessen.",
    "Das Paket wurde gestern Nachmittag beim Nachbarn abgegeben.",
    "Der Wind wehte so stark, dass der Wanderer den Mantel festhielt.",
    "Bitte sprechen Sie nach dem Signalton langsam und deutlich.",
    "In unserer Stadt gibt es drei Schwimmbäder und einen Park.",
    "Die Ampel schaltet auf Rot, und alle Autos bleiben stehen.",
    "Heute Abend gibt es im Fernsehen einen spannenden Krimi.",
    "Der Zug aus Köln hat leider zwanzig Minuten Verspätung.",
    "Ich rufe Sie morgen Vormittag noch einmal in Ihrem Büro an.",
    "Die Tür zum Keller klemmt schon seit einigen Wochen.",
    "Sie öffnete das Fenster und atmete die frische Morgenluft ein.",
    "Der Lehrer erklärt die Aufgabe noch einmal an der Tafel.",
    "Auf dem Dachboden fanden wir eine Kiste mit alten Briefen.",
    "Die Nachtschicht im Krankenhaus endet um sechs Uhr morgens.",
    "Wir sind gestern spät nach Hause gekommen und gleich eingeschlafen.",
    "Die Temperatur im Labor beträgt genau zwanzig Grad.",
    "Guten Morgen, wie geht es Ihnen heute?",
    "Das Wasser kocht schon.",
    "Bitte warten Sie einen Moment.",
    "Es ist gleich halb drei.",
    "Vielen Dank für Ihre Geduld.",
    "Die Ampel ist grün.",
    "Wir sehen uns morgen früh.",
    "Der Regen hat endlich aufgehört.",
    "Achtung, die Türen schließen.",
    "Alles ist für die Abfahrt bereit.",
)
_SHORT = 40  # characters; a prompt shorter than this gets a second one

# eSpeak NG variants (espeak-ng-data/voices/!v) that sound like ordinary adult speakers;
# robotic, whispering, Klatt and novelty variants are left out.
VOICES_MALE: tuple[str, ...] = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "Andy",
    "Denis",
    "Diogo",
    "Gene",
    "Henrique",
    "Hugo",
    "Lee",
    "Mario",
    "Michael",
    "gustave",
    "marcelo",
    "michel",
    "miguel",
    "pedro",
    "robert",
    "victor",
    "travis",
    "norbert",
)
VOICES_FEMALE: tuple[str, ...] = (
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Alicia",
    "Andrea",
    "Annie",
    "belinda",
    "linda",
    "aunty",
    "grandma",
    "steph",
    "anika",
    "shelby",
)

# Effect of the latent sleepiness s (about -1 alert .. +1 very sleepy) on each cue. The
# per-speaker spreads in _draw_speakers are of the same order, so a speaker's habits mask a good
# part of it. Calibrated with bench/demo_baseline.py (MFCC functionals + linear SVR reach a devel
# Spearman of about 0.5-0.7 on the default corpus).
_EFFECT = {
    "log_rate": -0.18,  # log words-per-minute: about -16 % at s = +1
    "word_gap": 2.4,  # eSpeak word gap, 10 ms units
    "pause_prob": 0.11,  # probability of an inserted pause between two words
    "pause_ms": 180.0,  # mean inserted pause length
    "pitch": -10.0,  # eSpeak pitch, 0..100 (about -10 % F0)
    "range": -14.0,  # eSpeak pitch range, 0..100
    "level_db": -4.0,  # speech level, dB
    "tilt": -0.25,  # first-difference tilt coefficient (darker when negative)
    "breath_db": 6.5,  # aspiration noise relative to speech, dB
}
_LATENT_NOISE = 0.30  # s = (KSS - 5) / 4 + N(0, this): the label is a noisy self-report
_LABEL_NOISE = 0.9  # clip KSS = round(speaker mean + N(0, this))


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: voice, speaking habits and recording channel (units per field)."""

    index: int
    name: str
    partition: str
    voice: str  # eSpeak NG voice name, e.g. "de+m3"
    kss_mean: float  # the speaker's mean KSS (1..9)
    log_rate: float  # log of speaking rate in words per minute
    word_gap: float  # eSpeak word gap, 10 ms units
    pause_prob: float  # probability of a pause between words when alert
    pause_ms: float  # mean inserted pause length when alert, ms
    pitch: float  # eSpeak base pitch, 0..100
    pitch_range: float  # eSpeak pitch range, 0..100
    scale: float  # resampling factor: formants and F0 times this, duration over it
    tilt: float  # y[n] = x[n] - tilt * x[n-1]; positive = brighter
    resonances: tuple[tuple[float, float, float], ...]  # peaking filters (Hz, dB, Q)
    breath_db: float  # aspiration noise level relative to speech, dB
    level_db: float  # speech RMS over active frames, dBFS
    noise_db: float  # background noise RMS, dBFS
    noise_colour: float  # one-pole low-pass coefficient of the noise (0 white .. 0.98 brown)
    hum_db: float  # mains hum RMS, dBFS (-inf: none)
    hum_hz: float  # mains frequency, Hz
    dc: float  # DC offset, full scale = 1


@dataclass(frozen=True)
class Clip:
    """One clip to render: its file, speaker, label and latent sleepiness."""

    file_name: str
    speaker: Speaker
    take: int  # the clip's number within its speaker
    label: int  # KSS 1..9
    sleepiness: float  # latent, about -1..1
    seed: int


def build_demo_corpus(
    out: str | os.PathLike,
    *,
    n_clips: int = 600,
    n_speakers: int = 30,
    seed: int = 0,
    jobs: int | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Synthesise the demo sleepiness corpus into `out` (a new or empty folder) and return its path.

    n_clips: total clips, split about equally over speakers; n_speakers: at least 3 (24 or more
    for a realistic corpus); seed: same seed, byte-identical corpus whatever `jobs`; jobs: worker
    processes (default os.cpu_count()); sample_rate: Hz of the 16-bit mono WAV files.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists; remove it or choose another folder")
    if n_speakers < 3:
        raise UserError(f"n_speakers must be at least 3 (one per partition), got {n_speakers}")
    if n_clips < n_speakers:
        raise UserError(f"n_clips ({n_clips}) must be at least n_speakers ({n_speakers})")
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    if not 8000 <= sample_rate <= 48000:
        raise UserError(f"sample_rate must be between 8000 and 48000 Hz, got {sample_rate}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise UserError(f"jobs must be at least 1, got {jobs}")
    males, females = _voice_pools()

    speakers = _draw_speakers(seed, n_speakers, males, females)
    clips = _plan_clips(seed, speakers, n_clips)
    with atomic_dir(out) as tmp:
        (tmp / "wav").mkdir()
        (tmp / "lab").mkdir()
        _render_all(clips, tmp / "wav", sample_rate, min(jobs, len(clips)))
        _write_tables(tmp, clips, seed, sample_rate)
    return out


# ----------------------------------------------------------------------------- planning


def _draw_speakers(
    seed: int, n_speakers: int, males: tuple[str, ...] = VOICES_MALE, females: tuple[str, ...] = VOICES_FEMALE
) -> list[Speaker]:
    """Draw every speaker's voice, habits, channel and mean KSS, and assign partitions."""
    pool = np.random.default_rng([seed, 0])
    female = pool.random(n_speakers) < 0.5
    voices_f = [str(v) for v in pool.permutation(females)]
    voices_m = [str(v) for v in pool.permutation(males)]
    drawn: list[dict[str, Any]] = []
    for k in range(n_speakers):
        rng = np.random.default_rng([seed, 1, k])
        names = voices_f if female[k] else voices_m
        base = females if female[k] else males
        # each variant once while they last, then variants repeat (with other habits and channel)
        variant = names.pop(0) if names else str(base[rng.integers(len(base))])
        kss_mean = 1.0 + 8.0 * rng.beta(1.4, 1.4)
        resonances = tuple(
            (
                float(np.exp(rng.uniform(np.log(250.0), np.log(3500.0)))),
                float(rng.normal(0.0, 4.0)),
                float(rng.uniform(0.7, 2.5)),
            )
            for _ in range(2)
        )
        has_hum = rng.random() < 0.3
        drawn.append(
            {
                "index": k,
                "name": f"spk{k + 1:03d}",
                "voice": f"de+{variant}",
                "kss_mean": float(kss_mean),
                "log_rate": float(np.log(170.0) + rng.normal(0.0, 0.09)),
                "word_gap": float(rng.uniform(0.0, 2.0)),
                "pause_prob": float(rng.uniform(0.0, 0.08)),
                "pause_ms": float(rng.uniform(120.0, 260.0)),
                "pitch": float(rng.uniform(30.0, 70.0)),
                "pitch_range": float(rng.uniform(30.0, 75.0)),
                "scale": float(rng.uniform(0.93, 1.07)),
                "tilt": float(rng.uniform(-0.35, 0.35)),
                "resonances": resonances,
                "breath_db": float(rng.uniform(-34.0, -20.0)),
                "level_db": float(rng.normal(-24.0, 3.0)),
                "noise_db": float(rng.uniform(-66.0, -44.0)),
                "noise_colour": float(rng.choice([0.0, 0.5, 0.9, 0.98])),
                "hum_db": float(rng.uniform(-62.0, -48.0)) if has_hum else -math.inf,
                "hum_hz": float(rng.choice([50.0, 60.0])),
                "dc": float(rng.uniform(-0.002, 0.002)) if rng.random() < 0.3 else 0.0,
            }
        )
    partitions = _assign_partitions(np.random.default_rng([seed, 2]), [d["kss_mean"] for d in drawn])
    return [Speaker(partition=p, **d) for d, p in zip(drawn, partitions)]


def _assign_partitions(rng: np.random.Generator, kss_means: list[float]) -> list[str]:
    """Speaker-disjoint partitions, ~40/30/30 % of speakers, each spread over the KSS range."""
    n = len(kss_means)
    n_train = max(1, round(0.4 * n))
    n_devel = max(1, round(0.3 * n))
    n_test = n - n_train - n_devel
    if n_test < 1:  # only for n = 3
        n_train, n_test = n_train - 1, n_test + 1
    # each partition takes evenly spaced (jittered) ranks of the speakers sorted by mean KSS
    keys: list[float] = []
    parts: list[str] = []
    for part, count in zip(PARTITIONS, (n_train, n_devel, n_test)):
        keys.extend((np.arange(count) + rng.random(count)) / count)
        parts.extend([part] * count)
    by_rank = [parts[i] for i in np.argsort(keys, kind="stable")]
    assigned = [""] * n
    for rank, k in enumerate(np.argsort(kss_means, kind="stable")):
        assigned[k] = by_rank[rank]
    return assigned


def _plan_clips(seed: int, speakers: list[Speaker], n_clips: int) -> list[Clip]:
    """Clips per speaker (about equal), labels, latent sleepiness, shuffled file numbering."""
    n = len(speakers)
    counts = np.full(n, n_clips // n)
    counts[np.random.default_rng([seed, 3]).permutation(n)[: n_clips % n]] += 1
    planned: dict[str, list[tuple]] = {p: [] for p in PARTITIONS}
    for spk, count in zip(speakers, counts):
        for take in range(int(count)):
            rng = np.random.default_rng([seed, 4, spk.index, take])
            label = int(np.clip(np.rint(spk.kss_mean + rng.normal(0.0, _LABEL_NOISE)), 1, 9))
            latent = (label - 5.0) / 4.0 + rng.normal(0.0, _LATENT_NOISE)
            clip_seed = int(np.random.SeedSequence([seed, 5, spk.index, take]).generate_state(1)[0])
            planned[spk.partition].append((spk, take, label, float(latent), clip_seed))
    clips = []
    for part in PARTITIONS:
        rows = planned[part]
        order = np.random.default_rng([seed, 6, PARTITIONS.index(part)]).permutation(len(rows))
        width = max(4, len(str(len(rows))))
        for number, i in enumerate(order, start=1):
            spk, take, label, latent, clip_seed = rows[i]
            clips.append(Clip(f"{part}_{number:0{width}d}.wav", spk, take, label, latent, clip_seed))
    return clips


def _write_tables(folder: Path, clips: list[Clip], seed: int, sample_rate: int) -> None:
    """labels.csv, speakers.csv and README.txt for the rendered clips."""
    labels = ["file_name,label"] + [f"{c.file_name},{c.label}" for c in clips]
    speakers = ["file_name,speaker,partition"] + [
        f"{c.file_name},{c.speaker.name},{c.speaker.partition}" for c in clips
    ]
    (folder / "lab" / "labels.csv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (folder / "lab" / "speakers.csv").write_text("\n".join(speakers) + "\n", encoding="utf-8")
    n_clip = {p: sum(c.speaker.partition == p for c in clips) for p in PARTITIONS}
    n_spk = {p: len({c.speaker.name for c in clips if c.speaker.partition == p}) for p in PARTITIONS}
    readme = (
        f"Demo sleepiness corpus generated by auttention.democorpus.build_demo_corpus(seed={seed}): "
        f"{len(clips)} clips of synthetic German read speech (eSpeak NG via espeakng-loader, 16-bit mono "
        f"WAV at {sample_rate} Hz, 2-5 s) from {sum(n_spk.values())} speakers in speaker-disjoint partitions "
        f"(train {n_clip['train']} clips / {n_spk['train']} speakers, devel {n_clip['devel']} / "
        f"{n_spk['devel']}, test {n_clip['test']} / {n_spk['test']}). Labels are KSS 1-9 (test labels "
        "included); each speaker has a narrow KSS range around their own mean. A latent sleepiness, the "
        "label plus noise, makes speech slower, with longer and more frequent pauses, lower and flatter "
        "pitch, softer, darker and breathier; speakers also differ in these cues independently of KSS, and "
        "every speaker has their own recording channel (level, background noise, hum). The same seed "
        "gives byte-identical files. lab/labels.csv: file_name,label; lab/speakers.csv: "
        "file_name,speaker,partition. Synthetic data: not for any claim about real sleepy speech.\n"
    )
    (folder / "README.txt").write_text(readme, encoding="utf-8")


# ----------------------------------------------------------------------------- rendering


def _render_all(clips: list[Clip], wav_dir: Path, sample_rate: int, jobs: int) -> None:
    """Render and write every clip, in this process (jobs=1) or in `jobs` worker processes."""
    if jobs == 1:
        with _EspeakServer() as synth:
            for clip in clips:
                _write_clip(clip, wav_dir, sample_rate, synth)
        return
    # Plain subprocesses rather than multiprocessing: nothing forks the caller (which may hold
    # TensorFlow or Ray threads) and nothing re-imports the caller's __main__. Which worker
    # renders a clip does not matter: a clip depends only on its own parameters.
    env = _package_env()
    workers = []
    try:
        for w in range(jobs):
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, with its worker
            worker = "from auttention.democorpus import _worker_main; _worker_main()"
            proc = subprocess.Popen([sys.executable, "-c", worker], stdin=subprocess.PIPE, stderr=log, env=env)
            workers.append((proc, log))
            stdin = _piped(proc.stdin)
            stdin.write(pickle.dumps((clips[w::jobs], str(wav_dir), sample_rate)))
            stdin.close()
        for proc, log in workers:
            if proc.wait() != 0:
                log.seek(0)
                lines = log.read().decode(errors="replace").strip().splitlines() or ["no message"]
                raise RuntimeError(f"a demo corpus worker failed (exit code {proc.returncode}): {lines[-1]}")
    finally:
        for proc, log in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def _package_env() -> dict[str, str]:
    """The environment of a helper process that imports this package: this checkout's on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    return env


def _worker_main() -> None:
    """Entry point of a worker process: render the pickled clips from stdin."""
    clips, wav_dir, sample_rate = pickle.load(sys.stdin.buffer)
    with _EspeakServer() as synth:
        for clip in clips:
            _write_clip(clip, Path(wav_dir), sample_rate, synth)


def _write_clip(clip: Clip, wav_dir: Path, sample_rate: int, synth: _EspeakServer) -> None:

    audio = _render_clip(clip, sample_rate, synth)
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)
    soundfile.write(wav_dir / clip.file_name, pcm, sample_rate, subtype="PCM_16", format="WAV")


def _render_clip(clip: Clip, sample_rate: int, synth: _EspeakServer) -> np.ndarray:
    """The clip's audio as float64 in [-1, 1] at `sample_rate`, 2-5 s long."""

    spk, s = clip.speaker, clip.sleepiness
    rng = np.random.default_rng(clip.seed)
    e = _EFFECT
    params = {
        1: int(np.clip(round(math.exp(spk.log_rate + e["log_rate"] * s + rng.normal(0.0, 0.03))), 80, 450)),
        3: int(np.clip(round(spk.pitch + e["pitch"] * s + rng.normal(0.0, 2.0)), 0, 100)),
        4: int(np.clip(round(spk.pitch_range + e["range"] * s + rng.normal(0.0, 4.0)), 0, 100)),
        7: int(max(0, round(spk.word_gap + e["word_gap"] * s + rng.normal(0.0, 0.4)))),
        2: 100,
    }
    pause_prob = float(np.clip(spk.pause_prob + e["pause_prob"] * s + 0.03, 0.0, 0.5))
    pause_ms = max(60.0, spk.pause_ms + e["pause_ms"] * s)
    lead, tail = rng.uniform(0.1, 0.3, size=2)
    max_len, min_len = int(MAX_SECONDS * sample_rate), int(MIN_SECONDS * sample_rate)

    texts = [_pick_text(rng)]
    for attempt in range(3):
        ssml = _to_ssml(texts, rng, pause_prob, pause_ms)
        raw = synth(ssml, spk.voice, params, seed=int(rng.integers(1, 2**31 - 1)))
        # scale > 1 plays the voice faster: higher formants and F0, shorter, like a smaller vocal tract
        speech = soxr.resample(raw.astype(np.float64) / 32768.0, ESPEAK_RATE * spk.scale, sample_rate)
        start, stop = _active_bounds(speech, sample_rate)
        speech = speech[start:stop]
        n_lead, n_tail = int(lead * sample_rate), int(tail * sample_rate)
        if len(speech) + n_lead + n_tail >= min_len or attempt == 2:
            break
        texts.append(_pick_text(rng, short_only=True))
    if len(speech) + n_lead + n_tail > max_len:
        speech = _cut(speech, max_len - n_lead - n_tail, sample_rate)

    speech = _colour(speech, spk, s, sample_rate)
    speech = speech + _breath(speech, spk.breath_db + e["breath_db"] * s + rng.normal(0.0, 1.5), rng, sample_rate)
    level = spk.level_db + e["level_db"] * s + rng.normal(0.0, 1.5)
    speech *= 10 ** (level / 20) / max(_active_rms(speech, sample_rate), 1e-9)
    peak = np.abs(speech).max()
    if peak > 0.9:  # a recording engineer would have turned the gain down
        speech *= 0.9 / peak
    audio = np.concatenate([np.zeros(n_lead), speech, np.zeros(n_tail)])
    if len(audio) < min_len:
        audio = np.concatenate([audio, np.zeros(min_len - len(audio))])
    audio += _background(len(audio), spk, rng, sample_rate)
    return np.clip(audio, -1.0, 32767 / 32768)


def _pick_text(rng: np.random.Generator, short_only: bool = False) -> str:
    """One prompt; one shorter than _SHORT characters gets a second short one appended."""
    short = [t for t in SENTENCES if len(t) < _SHORT]
    first = short[rng.integers(len(short))] if short_only else SENTENCES[rng.integers(len(SENTENCES))]
    if len(first) < _SHORT:
        first = f"{first} {short[rng.integers(len(short))]}"
    return first


def _to_ssml(texts: list[str], rng: np.random.Generator, pause_prob: float, pause_ms: float) -> str:
    """SSML with pauses inserted between words (more often after punctuation)."""
    words = " ".join(texts).split()
    parts = []
    for i, word in enumerate(words):
        parts.append(escape(word))
        if i + 1 < len(words):
            p = min(0.9, 3 * pause_prob + 0.1) if word[-1] in ",.?!" else pause_prob
            if rng.random() < p:
                ms = round(pause_ms * rng.lognormal(0.0, 0.45))
                parts.append(f'<break time="{max(ms, 40)}ms"/>')
    return "<speak>" + " ".join(parts) + "</speak>"


def _frame_rms(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    hop = max(1, sample_rate // 100)  # 10 ms
    n = len(x) // hop
    if n == 0:
        return np.zeros(1), hop
    return np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)), hop


def _active_bounds(x: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """First and last sample of the 10 ms frames within 40 dB of the loudest."""
    rms, hop = _frame_rms(x, sample_rate)
    active = np.flatnonzero(rms > rms.max() * 10 ** (-40 / 20))
    if rms.max() <= 0 or len(active) == 0:
        return 0, len(x)
    return int(active[0] * hop), int(min(len(x), (active[-1] + 1) * hop))


def _active_rms(x: np.ndarray, sample_rate: int) -> float:
    rms, _ = _frame_rms(x, sample_rate)
    loud = rms[rms > rms.max() * 10 ** (-30 / 20)]
    return float(np.sqrt(np.mean(loud**2))) if len(loud) else 0.0


def _cut(x: np.ndarray, n_max: int, sample_rate: int) -> np.ndarray:
    """Shorten to at most n_max samples, cutting at the quietest 10 ms in the last 40 % and fading out."""
    rms, hop = _frame_rms(x[:n_max], sample_rate)
    lo = int(0.6 * len(rms))
    stop = (lo + int(np.argmin(rms[lo:]))) * hop if len(rms) > lo else n_max
    stop = max(stop, hop)
    y = x[:stop].copy()
    fade = min(len(y), int(0.03 * sample_rate))
    y[len(y) - fade :] *= np.linspace(1.0, 0.0, fade)
    return y


def _peaking(f0: float, gain_db: float, q: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ audio-EQ-cookbook peaking filter (b, a)."""
    a_lin = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sample_rate
    alpha = math.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a_lin, -2 * math.cos(w0), 1 - alpha * a_lin])
    a = np.array([1 + alpha / a_lin, -2 * math.cos(w0), 1 - alpha / a_lin])
    return b / a[0], a / a[0]


def _colour(x: np.ndarray, spk: Speaker, s: float, sample_rate: int) -> np.ndarray:
    """The speaker's timbre (resonances) and a tilt that darkens with sleepiness."""
    from scipy.signal import lfilter

    for f0, gain_db, q in spk.resonances:
        b, a = _peaking(min(f0, 0.4 * sample_rate), gain_db, q, sample_rate)
        x = lfilter(b, a, x)
    tilt = float(np.clip(spk.tilt + _EFFECT["tilt"] * s, -0.8, 0.8))
    return lfilter([1.0, -tilt], [1.0], x)


def _breath(x: np.ndarray, level_db: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Aspiration noise: band-limited noise following the speech envelope, `level_db` below the speech."""
    from scipy.signal import butter, sosfilt

    hi = min(6000.0, 0.45 * sample_rate)
    noise = sosfilt(butter(2, [1000.0, hi], "bandpass", fs=sample_rate, output="sos"), rng.standard_normal(len(x)))
    rms, hop = _frame_rms(x, sample_rate)  # 10 ms envelope, interpolated between frame centres
    envelope = np.interp(np.arange(len(x)), np.arange(len(rms)) * hop + hop / 2, rms)
    breath = noise * envelope
    ref, got = _active_rms(x, sample_rate), _active_rms(breath, sample_rate)
    return breath * (ref * 10 ** (level_db / 20) / got) if got > 0 else breath


def _background(n: int, spk: Speaker, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """The speaker's room and microphone: coloured noise, optional mains hum, DC offset."""
    from scipy.signal import lfilter

    noise = lfilter([1.0 - spk.noise_colour], [1.0, -spk.noise_colour], rng.standard_normal(n))
    level = 10 ** ((spk.noise_db + rng.normal(0.0, 2.0)) / 20)
    out = noise * (level / max(float(np.sqrt(np.mean(noise**2))), 1e-12))
    if np.isfinite(spk.hum_db):
        t = np.arange(n) / sample_rate
        phase = rng.uniform(0, 2 * math.pi)
        hum = sum(np.sin(2 * math.pi * spk.hum_hz * h * t + h * phase) / h for h in (1, 2, 3))
        out += hum * 10 ** (spk.hum_db / 20) / float(np.sqrt(np.mean(hum**2)))
    return out + spk.dc


# ----------------------------------------------------------------------------- eSpeak NG


def _voice_pools() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The male and female variants that this espeakng-loader's data folder has."""
    # eSpeak silently falls back to the plain voice for an unknown variant, so check the files
    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    males = tuple(v for v in VOICES_MALE if (folder / v).is_file())
    females = tuple(v for v in VOICES_FEMALE if (folder / v).is_file())
    if not males or not females:
        raise UserError(f"no eSpeak NG voice variants found in {folder}; reinstall espeakng-loader")
    return males, females


def _piped(stream: IO[bytes] | None) -> IO[bytes]:
    """A child process's stream opened with subprocess.PIPE (never None then)."""
    assert stream is not None
    return stream


@typing.final
class _EspeakServer:
    """Client of the eSpeak NG server process: call it with SSML text to get int16 samples at 22050 Hz."""

    def __enter__(self) -> _EspeakServer:
        # auttention/espeak.py: a lean process of its own (ctypes only), so that forking it is cheap
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "auttention.espeak"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_package_env(),
        )
        self._stdin, self._stdout = _piped(self._proc.stdin), _piped(self._proc.stdout)
        rate = struct.unpack("<i", self._read())[0]
        if rate != ESPEAK_RATE:
            self.__exit__()
            raise RuntimeError(f"eSpeak NG reports {rate} Hz, expected {ESPEAK_RATE}")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stdin.close()  # the server ends when its stdin does
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stdout.close()

    def _read(self) -> bytes:
        header = self._stdout.read(8)
        if len(header) < 8:
            raise RuntimeError(f"the eSpeak NG server stopped (exit code {self._proc.poll()})")
        status, size = struct.unpack("<iI", header)
        payload = self._stdout.read(size)
        if status != 0:
            raise RuntimeError(f"eSpeak NG: {payload.decode(errors='replace')}")
        return payload

    def __call__(self, ssml: str, voice: str, params: dict[int, int], seed: int) -> np.ndarray:
        # params: espeak_PARAMETER -> value (1 rate wpm, 2 volume, 3 pitch, 4 range, 7 word gap)
        request = {"text": ssml, "voice": voice, "params": sorted(params.items()), "seed": seed}
        self._stdin.write(json.dumps(request).encode() + b"\n")
        self._stdin.flush()
        samples = np.frombuffer(self._read(), dtype="<i2")
        if len(samples) == 0:
            raise RuntimeError(f"eSpeak NG returned no audio for voice {voice}")
        return samples
