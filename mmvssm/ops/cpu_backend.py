"""TEMPORARY placeholder: the CPU-kernel helper replaces this with the fused C++ kernel wrapper."""


def is_available() -> bool:
    return False


def selective_scan_cpu(*args):
    raise RuntimeError('fused CPU kernel not built')
