"""`trimtab demo` / `make demo`: the closed loop on one machine with simulated users, watched live and
reported as an HTML page with plots. Entry point: `run_demo` (`trimtab.app.demo.run`)."""

from trimtab.app.demo.run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
