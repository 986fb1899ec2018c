"""Status: `rayhet status`, the running app's plan, replica targets vs running, cost, attainment and last solve."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from rayhet.errors import RayhetError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default="auto", help="Ray cluster address (default: auto, the local cluster)")
    p.add_argument("--app", default="default", help="Serve application name (default: default)")
    p.add_argument("--watch", type=float, metavar="N", help="refresh every N seconds until Ctrl-C")
    p.add_argument("--json", action="store_true", help="print the controller's status as JSON")


def _ago(now: float, t: float | None) -> str:
    if not t:
        return "never"
    s = max(0.0, now - t)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def _span(edges: list[int], k: int) -> str:
    lo = edges[k - 1] + 1 if k else 1
    return f"{lo}-{edges[k]}"


def render(st: dict) -> str:
    """The human-readable status (pure: a dict from `PlanController.status()` in, text out)."""
    now = st.get("now") or time.time()
    plan, last, solve = st.get("plan") or {}, st.get("last_period") or {}, st.get("last_solve") or {}
    lines = [f"app {st.get('app')}: " + ("idle (no traffic: pools at their minimum)" if st.get("idle") else "serving")
             + ("; controller resumed a persisted plan" if st.get("resumed") else "")]
    if plan:
        lines.append(f"plan      {plan.get('status')}, ${plan.get('cost_per_hour', 0):.2f}/hour, sized for "
                     f"{plan.get('rate', 0):.2f} req/s, adopted {_ago(now, st.get('plan_at'))}"
                     + (f" ({plan['message']})" if plan.get("message") else ""))
    else:
        lines.append("plan      none yet")
    if solve:
        lines.append(f"solve     {solve.get('status')} in {solve.get('seconds', 0):.3f}s, {_ago(now, solve.get('at'))}, "
                     f"because {solve.get('reason')}" + (f": {solve['message']}" if solve.get("message") else ""))
    if last:
        lines.append(f"period    {_ago(now, last.get('at'))}: {last.get('reason')} ({last.get('detail')})")
    rates = last.get("rates") or []
    total = sum(r for _, _, r in rates)
    lines.append(f"traffic   {total:.2f} req/s (smoothed)")
    if "ingress" in st:  # replicas that reported lately, and how many run the plan in force
        ing = st["ingress"] or {}
        current = sum(1 for r in ing.values() if plan and r.get("plan_created_at") == plan.get("created_at"))
        lines.append(f"ingress   {len(ing)} replica(s) reporting, {current} on the current plan")
    lines.append("")
    lines.append(f"{'pool':<16}{'target':>7}{'running':>8}{'planned':>8}{'in-flight':>10}{'SLO met':>9}  note")
    reported, att = st.get("reported") or {}, last.get("attainment") or {}
    held, bumped = last.get("held") or {}, last.get("bumped") or {}
    pools = sorted(set(st.get("bounds") or {}) | set(st.get("targets") or {}) | set(plan.get("replicas") or {}))
    for p in pools:
        rep = reported.get(p, {})
        note = (f"scale-down to {held[p]} delayed" if p in held else "") or ("raised for queue" if p in bumped else "")
        a = att.get(p)
        lines.append(f"{p:<16}{st.get('targets', {}).get(p, '-'):>7}{rep.get('running', '-'):>8}"
                     f"{(plan.get('replicas') or {}).get(p, '-'):>8}{rep.get('in_flight', '-'):>10}"
                     f"{'-' if a is None else f'{100 * a:.0f}%':>9}  {note}")
    if plan.get("routing"):
        lines.append("")
        lines.append("routing (input tokens x output tokens -> pool shares; * = traffic seen)")
        seen = {(i, j) for i, j, _ in rates}
        for i, j, shares in plan["routing"]:
            mix = ", ".join(f"{p} {100 * s:.0f}%" for p, s in sorted(shares.items(), key=lambda kv: -kv[1]))
            mark = "*" if (i, j) in seen else " "
            lines.append(f" {mark} in {_span(plan['input_edges'], i):>11} out {_span(plan['output_edges'], j):>9}  {mix}")
    return "\n".join(lines)


def fetch(address: str, app: str = "default") -> dict:
    """The controller's status; a RayhetError (one line, exit 2) when the cluster, app or controller is missing."""
    import ray

    from rayhet.serve.autoscaling import get_controller

    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, TimeoutError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RayhetError(f"cannot reach a Ray cluster at {address!r} ({first}); start one (e.g. `serve run "
                              "rayhet.app:build`) or pass --address") from None
    try:
        ctl = get_controller(app)
    except ValueError:
        raise RayhetError(f"no rayhet controller runs for Serve app {app!r} on this cluster ({_app_state(app)}; "
                          "the controller needs every pool to have a profile and controller.enabled)") from None
    try:
        return ray.get(ctl.status.remote(), timeout=30)
    except Exception as e:  # noqa: BLE001 - dead, restarting or busy: say which, in one line
        raise RayhetError(f"the rayhet controller of app {app!r} did not answer: {type(e).__name__}") from None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for many minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # `auto`, or a ray:// client address (its own timeout applies)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayhetError(f"cannot reach a Ray cluster at {address!r} ({e.strerror or type(e).__name__}); check "
                          "--address (the head's GCS address, e.g. 10.0.0.1:6379)") from None


def _app_state(app: str) -> str:
    try:
        from ray import serve

        apps = serve.status().applications
    except Exception:  # noqa: BLE001 - only for the message
        return "Serve's state unknown"
    if app not in apps:
        return f"no such Serve app; running apps: {', '.join(sorted(apps)) or 'none'}"
    return f"the app is {getattr(apps[app].status, 'value', apps[app].status)}"


def run(args: argparse.Namespace) -> int:
    try:
        while True:
            st = fetch(args.address, args.app)
            out = json.dumps(st, indent=1, default=str) if args.json else render(st)
            if args.watch and sys.stdout.isatty():
                print("\033[2J\033[H", end="")
            print(out, flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
