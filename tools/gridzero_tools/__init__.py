"""gridzero's tools: the plant simulator, the controller bench, the fault matrix and the fuzzer.

They import the library and the services; no service imports them, and no device image
holds them.
"""
