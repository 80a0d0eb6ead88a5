"""Benchmarks of the glue against the hub it fronts: `make bench` (`python -m benchmarks`).

Each figure is a ratio of two things measured side by side in one run (the
glue's way and the hub's own way of doing the same), with the absolute values:

1. a server's status (JSON) through the glue vs the same user model from the hub API;
2. launch to ready through the glue vs a direct named-server spawn (same clone step);
3. fifty users launching at once, through the glue vs directly through the hub;
4. the clone of one commit of a long history: glue.session.clone vs a full clone and checkout;
5. the glue's memory, idle and after 10,000 requests;
6. launch to ready with and without the sandbox (bubblewrap);
7. a stop through the glue with a clean workspace, with and without the autosave work
   (an absolute target: at most 0.2 s more), and with 50 MB of changed files;
8. a git push through the session's git component vs straight to GitLab with the token;
9. launch to ready with users isolated from each other vs the code before that isolation
   (`figures.ISOLATION_BASE`, checked out beside this one with `git archive`);
10. launch to ready vs the code before its breakdown and cuts (`figures.LAUNCH_BASE`, checked
    out beside this one and run in its own environment: NOTEBOOKS_BENCH_BASE_PYTHON, else a
    venv built once into `.bench/`), with the median of each phase of a launch, recorded
    as it ran, and the same steps read from both hubs' logs.

It starts its own hub, proxy and glue (testing.hub.RunningHub) on free
loopback ports and stops everything it started. `python -m benchmarks --smoke`
runs every figure once at a tiny size (harness.SMOKE) in about a minute; `make
test` does so (tests/test_bench_smoke.py), so the benchmark cannot rot unnoticed.
A new figure is a function in figures.py and one line in its HUB_FIGURES.
"""
