"""Image and audio building blocks the OpenAI / Together emulators share.

Images are the Sandbox's deterministic drawings (`draw_sandbox_image`), so emulated providers
answer real PNGs. Speech is emulated honestly: a test makes a WAV whose RIFF `LIST/INFO/ICMT`
chunk holds the words "spoken" in it (`speech_wav`), and the emulators "hear" those words
(`spoken_text`); any other audio transcribes to a fixed description of its size.
"""

from __future__ import annotations

import struct
from email import policy
from email.parser import BytesParser
from typing import Any

from finetune_service.providers.sandbox import draw_sandbox_image

AUDIO_EXTENSIONS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "wav", "webm")
SAMPLE_RATE = 8000


def emulated_png(prompt: str, width: int, height: int, index: int = 0) -> bytes:
    return draw_sandbox_image(prompt, width, height, index).data


def speech_wav(text: str, seconds: float = 1.0) -> bytes:
    """A valid mono 8 kHz 16-bit WAV of silence whose INFO/ICMT chunk carries `text`."""
    frames = b"\x00\x00" * int(SAMPLE_RATE * seconds)
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    comment = text.encode() + b"\x00"
    if len(comment) % 2:
        comment += b"\x00"
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(comment)) + comment
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", len(info)) + info
              + b"data" + struct.pack("<I", len(frames)) + frames)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    found, offset = [], start
    while offset + 8 <= end:
        kind, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        found.append((kind, data[offset + 8:offset + 8 + size]))
        offset += 8 + size + (size % 2)
    return found


def spoken_text(data: bytes) -> tuple[str, float]:
    """(the words in the audio, its duration in seconds)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        text, seconds = None, 0.0
        for kind, payload in _chunks(data, 12, len(data)):
            if kind == b"LIST" and payload[:4] == b"INFO":
                for sub, value in _chunks(payload, 4, len(payload)):
                    if sub == b"ICMT":
                        text = value.rstrip(b"\x00").decode("utf-8", "replace")
            elif kind == b"data":
                seconds = len(payload) / (SAMPLE_RATE * 2)
        if text is not None:
            return text, seconds
    return f"(emulated speech: {len(data)} bytes of audio)", 1.0


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """(text fields, files as {name: (filename, bytes)}) of a multipart/form-data body."""
    message = BytesParser(policy=policy.default).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if filename is not None:
            files[name] = (filename, payload)
        else:
            fields[name] = payload.decode()
    return fields, files


def _stamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def transcript_body(text: str, seconds: float, response_format: str, *, task: str,
                    language: str) -> dict[str, Any] | str:
    """OpenAI's answer shapes: json / verbose_json objects, text / srt / vtt strings."""
    if response_format == "text":
        return text + "\n"
    if response_format == "srt":
        return f"1\n{_stamp(0, ',')} --> {_stamp(seconds, ',')}\n{text}\n\n"
    if response_format == "vtt":
        return f"WEBVTT\n\n{_stamp(0, '.')} --> {_stamp(seconds, '.')}\n{text}\n\n"
    if response_format == "verbose_json":
        return {"task": task, "language": language, "duration": seconds, "text": text,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text, "tokens": [],
                              "temperature": 0.0, "avg_logprob": -0.1, "compression_ratio": 1.0,
                              "no_speech_prob": 0.0}],
                "usage": {"type": "duration", "seconds": max(1, round(seconds))}}
    return {"text": text, "usage": {"type": "duration", "seconds": max(1, round(seconds))}}
