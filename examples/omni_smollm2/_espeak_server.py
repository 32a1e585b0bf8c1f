"""eSpeak NG synthesis server (run by ``speech.py`` as its own process; imports no masq_jax, no JAX).

eSpeak NG keeps state across utterances that neither ``espeak_Terminate`` nor its seeds reset (the
same call gives different samples the second time), so this process loads the library once and
forks a child per request: every utterance starts from the same fresh state, and the output is a
function of the request alone. The breathy voice variants (``+f2``) draw noise from libc's ``rand()``
and from eSpeak's own generator, which the library seeds from the clock: the child seeds both, or
the same request gives other samples in another process (measured: 16 % of omni-SmolLM2's audio
calibration tokens differed between two runs). Protocol: one request a line on stdin, ``voice<TAB>rate<TAB>pitch<TAB>text``;
the answer on stdout is an 8-byte little-endian sample count (negative: an error code), then int16
samples. The first answer (to no request) is the sample rate.
"""

import ctypes
import os
import struct
import sys

import espeakng_loader

CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def main() -> None:
    out = sys.stdout.buffer
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # synchronous
    out.write(struct.pack("<q", rate))
    out.flush()
    for line in sys.stdin:
        voice, speed, pitch, text = line.rstrip("\n").split("\t", 3)
        pid = os.fork()
        if pid == 0:  # the child: one utterance from the library's pristine state, then exit
            chunks = []

            @CALLBACK
            def collect(wav, n, events):
                if n > 0:
                    chunks.append(ctypes.string_at(wav, 2 * n))
                return 0

            lib.espeak_SetSynthCallback(collect)
            ctypes.CDLL(None).srand(0)  # the breath noise draws from libc's rand() ...
            lib.espeak_ng_SetRandSeed(ctypes.c_long(0))  # ... and from eSpeak's own generator (seeded by the clock)
            err = lib.espeak_SetVoiceByName(voice.encode())
            if err == 0:
                lib.espeak_SetParameter(1, int(speed), 0)
                lib.espeak_SetParameter(3, int(pitch), 0)
                data = text.encode()
                err = lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)
                lib.espeak_Synchronize()
            body = b"".join(chunks)
            out.write(struct.pack("<q", len(body) // 2 if err == 0 else -1 - err) + (body if err == 0 else b""))
            out.flush()
            os._exit(0)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
