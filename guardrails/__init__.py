"""Runtime guardrails: NeMo Guardrails as a checking layer around our own engine (no LLM is called).

The configuration is a NeMo Guardrails directory (`config/`: config.yml with the rails and trimtab's
policy under custom_data, rails.co with the Colang flows, *.txt example sentences); each flow
executes one of our actions and `LLMRails.check_async` runs them: by default one flow per stage, whose
action runs the rails custom_data lists.

    input rails   jailbreak (similarity to known attacks: MiniLM + faiss), topics, pii (mask | block)
    output rails  secret (leaks), blocklist (terms), toxicity (score), pii (mask | block)

Modules, from the bottom up:
- `decisions`: allow / modify / block with a reason code; `policy`: custom_data, strictly validated.
- `pii`, `semantic` (embedder, faiss indexes), `rails` (the actions), `runtime` (`Guardrails`: one
  loaded directory, `check(stage, text)`), `streaming` (output rails over a sliding window).
- `service` (`LiveGuardrails`: reload without restart, metrics, spans): what serving holds.
- `gate` (the promotion gate on red-team violation rates), `training` (how feedback on a response a
  rail stopped may be trained): what the learning loop uses.

Heavy dependencies (NeMo Guardrails, torch, faiss) load only when rails are built, so importing
`guardrails.training` (the feedback service does) stays cheap.
"""

from guardrails.decisions import Action, CheckResult, Decision, Stage

__all__ = ["Action", "CheckResult", "Decision", "Stage"]
