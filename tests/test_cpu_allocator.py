"""mmvssm.utils.retain_freed_memory: malloc keeps freed memory, so re-allocating costs no page faults."""
import json
import logging
import subprocess
import sys

import pytest

from mmvssm.utils import cpu_allocator, retain_freed_memory

# In a fresh process: optionally retain, then five rounds of allocating, touching and freeing a 64 MiB
# tensor three times; prints the minor page faults of each round.
CHURN = '''
import json, resource, sys, torch
from mmvssm.utils import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == '1' else None
faults = []
for _ in range(5):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        t = torch.ones(16 << 20)
        del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(json.dumps(dict(applied=applied, faults=faults)))
'''


def _churn(retain: bool) -> dict:
    proc = subprocess.run([sys.executable, '-c', CHURN, '1' if retain else '0'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(cpu_allocator._glibc() is None, reason='needs glibc')
def test_retained_memory_is_reused_without_page_faults():
    default = _churn(retain=False)
    if min(default['faults']) < 1000:
        pytest.skip(f'this C library already reuses 64 MiB blocks (faults per round {default["faults"]})')
    retained = _churn(retain=True)
    assert retained['applied'] is True
    # 64 MiB = 16,384 pages: the default maps and faults every block again; once retained, the heap
    # grows in the first round(s) and then serves every block from memory it kept.
    assert retained['faults'][0] > 10000
    assert max(retained['faults'][-2:]) < 200, retained
    assert min(default['faults'][-2:]) > 10000, default


@pytest.mark.parametrize('value', [0, -5, 2048, True, 1.5, '64'])
def test_bad_trim_threshold_is_refused(value):
    with pytest.raises(ValueError, match='trim_threshold_mib must be an integer from 1 to 2047'):
        retain_freed_memory(value)


def test_other_c_library_is_reported_not_tuned(monkeypatch):
    logged = []
    monkeypatch.setattr(cpu_allocator, '_glibc', lambda: None)
    monkeypatch.setattr(cpu_allocator, 'print_log',
                        lambda msg, logger=None, level=logging.INFO: logged.append((level, msg)))
    assert retain_freed_memory() is False
    assert logged == [(logging.WARNING, 'retain_freed_memory: the C library is not glibc; malloc left '
                                        'at its defaults')]
