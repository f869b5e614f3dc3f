"""pysyncer's benchmarks, each a module run from the repository root.

``python -m benchmarks.bench_<name> --help`` shows one's options. They measure the
installed ``pysyncer`` (an editable install is the source tree): the processes they start
come from :mod:`pysyncer.procs`, and the timing of a compiled module against its
pure-Python twin from :mod:`benchmarks.twins`. They must not import the tests (``tests``)
and must not edit ``sys.path``; nothing here is shipped in a wheel.
"""
