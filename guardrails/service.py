"""The rails a long-running process holds: loaded at start-up (a bad config stops it, naming the file),
reloaded without a restart when the config directory changes, every check measured and traced.

Checks run in `guardrails.check_processes` child processes (`guardrails.check_process`), or on the
event loop with 0. A reload is built off the event loop (the children too) and swapped in whole: a
check in progress finishes on the rails it started with. A config that fails to load is logged and
counted and the previous rails stay.

Input verdicts are remembered by text for the rails that gave them (`guardrails.input_cache`): the API
is stateless, so a conversation sends every earlier turn (and its system prompt) again with each new
one, and each would otherwise go through the rails again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from pathlib import Path

from opentelemetry import trace

from guardrails.check_process import CheckProcesses, CheckProcessesDidNotStart
from guardrails.decisions import Action, CheckResult, Stage
from guardrails.metrics import GuardrailMetrics
from guardrails.policy import GuardrailsConfigError
from guardrails.runtime import BUNDLED_CONFIG, Guardrails, fingerprint
from guardrails.semantic import Embedder
from guardrails.streaming import OutputStream
from trimtab.config import GuardrailsConfig
from trimtab.suite import ProtectedTerms

log = logging.getLogger(__name__)


class LiveGuardrails:
    def __init__(
        self,
        settings: GuardrailsConfig,
        rails: Guardrails,
        embedder: Embedder,
        protected: ProtectedTerms,
        meters: GuardrailMetrics,
        tracer: trace.Tracer | None = None,
        processes: CheckProcesses | None = None,
    ) -> None:
        self.settings = settings
        self.rails = rails
        self.processes = processes  # the children running `rails`' checks; None: they run here
        self._embedder = embedder
        self._protected = protected
        self._meters = meters
        self._tracer = tracer or trace.get_tracer("trimtab.guardrails")
        self._refused_version = ""  # a broken config is reported once, not at every poll
        self._poller: asyncio.Task[None] | None = None
        self._inputs: OrderedDict[tuple[str, str], CheckResult] = OrderedDict()  # (rails version, text) -> verdict

    @classmethod
    async def start(
        cls, settings: GuardrailsConfig, protected: ProtectedTerms, meters: GuardrailMetrics
    ) -> LiveGuardrails:
        """Load the rails (GuardrailsConfigError if the config is bad) and start watching the directory."""
        embedder = await asyncio.to_thread(Embedder, settings.device, settings.embedding_threads)
        rails = await asyncio.to_thread(Guardrails.load, config_dir(settings), embedder, protected)
        processes = await _processes(settings, rails, embedder, protected, meters)
        live = cls(settings, rails, embedder, protected, meters, processes=processes)
        if settings.reload_poll_s > 0:
            live._poller = asyncio.create_task(live._watch(), name="guardrails-reload")
        log.info("guardrails loaded from %s (%s)", rails.config_dir, rails.version[:12])
        return live

    def applies_to(self, tenant: str) -> bool:
        return not self.settings.tenants or tenant in self.settings.tenants

    async def check(self, stage: Stage, text: str, prompt: str = "") -> CheckResult:
        rails, processes = self.rails, self.processes  # one config for the whole check, even if a reload lands
        key = (rails.version, text)
        with self._tracer.start_as_current_span(f"guardrails.{stage.value}") as span:
            started = time.perf_counter()
            cached = self._inputs.get(key) if stage is Stage.INPUT else None
            if cached is not None:
                self._inputs.move_to_end(key)
                result = cached
            else:
                checker = processes or rails
                result = await checker.check(stage, text, prompt)
                # A failure (a rail's `<rail>.error`, a check process's `guardrails.error`) is not remembered:
                # that text is checked again next time, not refused for as long as a verdict would be kept.
                failed = any(d.reason_code.endswith(".error") for d in result.decisions)
                if stage is Stage.INPUT and self.settings.input_cache > 0 and not failed:
                    self._inputs[key] = result
                    while len(self._inputs) > self.settings.input_cache:
                        self._inputs.popitem(last=False)
            elapsed = time.perf_counter() - started
            span.set_attribute("trimtab.guardrails.cached", cached is not None)
            span.set_attribute("trimtab.guardrails.action", result.action.value)
            span.set_attribute("trimtab.guardrails.config_version", rails.version[:12])
            span.set_attribute(
                "trimtab.guardrails.decisions",
                [
                    f"{d.rail}:{d.action.value}:{d.reason_code}"
                    for d in result.decisions
                    if d.action is not Action.ALLOW
                ],
            )
        self._meters.checked(stage, result, elapsed)
        return result

    def output_stream(self, prompt: str) -> OutputStream:
        async def check(window: str) -> CheckResult:
            return await self.check(Stage.OUTPUT, window, prompt)

        return OutputStream(check, self.settings.stream, self.rails.policy.pii.entities)

    def refusal(self, reason_code: str) -> str:
        return self.rails.refusal(reason_code)

    async def reload_if_changed(self) -> bool:
        """Load the directory again if it changed since the rails were loaded; True if new rails serve."""
        directory = config_dir(self.settings)
        version = await asyncio.to_thread(fingerprint, directory)
        if version in (self.rails.version, self._refused_version):
            return False
        try:
            rails = await asyncio.to_thread(Guardrails.load, directory, self._embedder, self._protected)
            processes = await _processes(self.settings, rails, self._embedder, self._protected, self._meters)
        except GuardrailsConfigError as exc:
            self._refused_version = version
            self._meters.reloads.add(1, {"ok": "false"})
            log.error("guardrails config changed but cannot be used; the previous rails stay:\n%s", exc)
            return False
        except CheckProcessesDidNotStart as exc:  # the machine, not the config: tried again at the next poll
            self._meters.reloads.add(1, {"ok": "false"})
            log.error("guardrails config changed but its check processes did not start (%s); trying again", exc)
            return False
        replaced, (self.rails, self.processes) = self.processes, (rails, processes)
        if replaced is not None:
            # After the checks it is running; shielded: a close of this service meanwhile must not leave it half done.
            await asyncio.shield(replaced.close())
        self._inputs.clear()  # the old rails' verdicts (their version is in the keys: this only frees them)
        self._meters.reloads.add(1, {"ok": "true"})
        log.info("guardrails reloaded from %s (%s)", rails.config_dir, rails.version[:12])
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            try:
                await self.reload_if_changed()
            except Exception:  # e.g. the directory vanished for a moment: keep serving, look again later
                log.exception("guardrails reload check failed")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.processes is not None:
            await self.processes.close()
        self._embedder.close()


async def _processes(
    settings: GuardrailsConfig,
    rails: Guardrails,
    embedder: Embedder,
    protected: ProtectedTerms,
    meters: GuardrailMetrics,
) -> CheckProcesses | None:
    if settings.check_processes == 0:
        return None
    count = settings.check_processes
    processes = CheckProcesses(rails.config_dir, embedder, protected, count, lambda: meters.process_exits.add(1))
    await processes.start()
    return processes


def config_dir(settings: GuardrailsConfig) -> Path:
    return settings.config_dir if settings.config_dir is not None else BUNDLED_CONFIG
