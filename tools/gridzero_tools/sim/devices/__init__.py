"""The plant's devices on their wires (pure emulators; I/O lives in gridzero_tools.sim.service).

Each emulator turns received bytes into plant commands and plant state into
the bytes the real device would send, using the services' own codecs.
"""
