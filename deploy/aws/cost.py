"""Monthly AWS cost of the stack from expected traffic, and the throughput each setup serves.

    python -m deploy.aws.cost --requests-per-day 5000 --pages-per-request 2
    python -m deploy.aws.cost --preset single        # one g4dn.xlarge for both model stages, 24/7
    python -m deploy.aws.cost --preset autoscaled    # 1-3 instances per stage, auto-scaled
    python -m deploy.aws.cost --preset single --compare   # on-demand, Spot, Savings Plan, office hours side by side

Prices (with their date) are in deploy/aws/prices.json. Model instances per hour follow the
traffic: a day has `busy_hours` at `peak_factor` times the quiet rate; each stage runs enough
instances to keep them under `target_utilization`, within its min/max. Per-page seconds come from
prices.json (CPU: measured by benchmarks/latency.py; GPU: an estimate until measured).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

PRICES = Path(__file__).resolve().parent / "prices.json"


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float = 5000
    pages_per_request: float = 1.0
    busy_hours: float = 10
    peak_factor: float = 3.0  # busy-hour rate / quiet-hour rate


@dataclass(frozen=True)
class Setup:
    instance_type: str = "g4dn.xlarge"
    spot: bool = False
    savings_plan: bool = False  # a 1-year Savings Plan covering the instances that always run (the minimum)
    office_hours: bool = False  # OfficeHoursOnly=true: every stage at zero outside office hours
    shared_gpu: bool = False  # both model stages on the same instance(s)
    detector_min: int = 1
    detector_max: int = 3
    recognizer_min: int = 1
    recognizer_max: int = 3
    frontend_tasks: int = 1
    target_utilization: float = 0.6
    per_page: str = "gpu_t4_estimate"


# The planning setups. Both put the two model stages on the same instances (template parameter
# ShareOneGpu=true); with ShareOneGpu=false each stage has its own GPUs, at least two instances.
PRESETS = {
    # one g4dn.xlarge 24/7 for a light load
    "single": (Setup(shared_gpu=True, detector_max=1, recognizer_max=1), Traffic(5000, 1.0)),
    # 1-3 instances following a working day: 2 in the busy hours, 1 at night
    "autoscaled": (Setup(shared_gpu=True), Traffic(120000, 3.0)),
}


def hourly_pages(traffic: Traffic) -> tuple[float, float]:
    """(busy-hour rate, quiet-hour rate) in pages/hour."""
    pages = traffic.requests_per_day * traffic.pages_per_request
    quiet_hours = 24 - traffic.busy_hours
    quiet = pages / (traffic.busy_hours * traffic.peak_factor + quiet_hours)
    return quiet * traffic.peak_factor, quiet


def instances_needed(pages_per_hour: float, seconds_per_page: float, utilization: float, low: int, high: int) -> int:
    wanted = math.ceil(pages_per_hour * seconds_per_page / (3600 * utilization)) if pages_per_hour else 0
    return max(low, min(high, wanted))


def monthly_cost(traffic: Traffic, setup: Setup, prices: dict) -> dict:
    hours = prices["hours_per_month"]
    hourly = prices["gpu_instances"][setup.instance_type]["on_demand_hourly"]
    if setup.spot:
        hourly *= 1 - prices["spot_discount"]
    seconds = prices["per_page"][setup.per_page]
    busy, quiet = hourly_pages(traffic)
    # with office hours, the day's pages all come in the busy hours (the stack is at zero the rest of the week)
    office = prices["office_hours_per_week"]["hours"] / (24 * 7) if setup.office_hours else 1.0
    if setup.office_hours:
        busy = traffic.requests_per_day * traffic.pages_per_request / traffic.busy_hours

    def average_instances(stage_seconds: float, low: int, high: int) -> float:
        at_busy = instances_needed(busy, stage_seconds, setup.target_utilization, low, high)
        if setup.office_hours:
            return at_busy * office
        at_quiet = instances_needed(quiet, stage_seconds, setup.target_utilization, low, high)
        return (at_busy * traffic.busy_hours + at_quiet * (24 - traffic.busy_hours)) / 24

    if setup.shared_gpu:
        stage_seconds = seconds["detector"] + seconds["recognizer"]
        low, high = max(setup.detector_min, setup.recognizer_min), max(setup.detector_max, setup.recognizer_max)
        gpu_instances = average_instances(stage_seconds, low, high)
        capacity = high * 3600 * setup.target_utilization / stage_seconds
    else:
        detector = average_instances(seconds["detector"], setup.detector_min, setup.detector_max)
        recognizer = average_instances(seconds["recognizer"], setup.recognizer_min, setup.recognizer_max)
        gpu_instances = detector + recognizer
        capacity = min(
            setup.detector_max * 3600 * setup.target_utilization / seconds["detector"],
            setup.recognizer_max * 3600 * setup.target_utilization / seconds["recognizer"],
        )
    pages_month = traffic.requests_per_day * traffic.pages_per_request * hours / 24
    frontend = prices["frontend_task"]
    scales = (setup.detector_max > setup.detector_min) or (setup.recognizer_max > setup.recognizer_min)
    launches = prices["instance_launches_per_month"]["autoscaled" if scales else "fixed"]
    gpu_cost = gpu_instances * hours * hourly
    if setup.savings_plan and not setup.spot and not setup.office_hours:
        always_on = (
            max(setup.detector_min, setup.recognizer_min)
            if setup.shared_gpu
            else (setup.detector_min + setup.recognizer_min)
        )
        gpu_cost -= (
            min(gpu_instances, always_on) * hours * hourly * prices["savings_plan_discount"]["one_year_no_upfront"]
        )
    lines = {
        "GPU instances": gpu_cost,
        "EBS volumes": gpu_instances * prices["ebs_gb_per_instance"] * prices["ebs_gp3_gb_month"],
        "Fargate (Envoy + orchestrator)": setup.frontend_tasks
        * hours
        * office
        * (frontend["vcpu"] * prices["fargate_vcpu_hour"] + frontend["gb"] * prices["fargate_gb_hour"]),
        "Load balancer": hours
        * (
            prices["alb_hourly"]
            + prices["alb_lcu_hourly"] * max(1.0, pages_month * prices["request_kb_per_page"] / 1e6 / hours)
        ),
        "CloudWatch": pages_month
        * prices["log_kb_per_page"]
        / 1e6
        * (prices["cloudwatch_logs_ingest_gb"] + prices["cloudwatch_logs_storage_gb_month"])
        + prices["cloudwatch_alarms"] * prices["cloudwatch_alarm_month"]
        + prices["cloudwatch_dashboard_month"],
        "ECR": prices["ecr_image_gb"] * prices["ecr_gb_month"],
        "Data transfer out": pages_month * prices["response_kb_per_page"] / 1e6 * prices["data_transfer_out_gb"],
        "Secrets Manager": prices["secrets_manager_secret_month"],
        # the VPC's NAT gateway (the private subnets reach ECR, CloudWatch and X-Ray through it): the hours, and
        # the model images pulled at each GPU instance start plus the logs
        "NAT gateway": hours * prices["nat_gateway_hourly"]
        + prices["nat_gb_processed"]
        * (prices["ecr_image_gb"] * launches + pages_month * prices["log_kb_per_page"] / 1e6),
        # every request traced (full sampling): one trace a page, past the free tier
        "X-Ray": max(0.0, pages_month - prices["xray_free_traces_month"]) / 1e6 * prices["xray_traces_per_million"],
        "Container Insights": len(("detector", "recognizer", "frontend"))
        * prices["container_insights_metrics_per_service"]
        * prices["container_insights_metric_month"],
    }
    return {
        "lines": lines,
        "total": sum(lines.values()),
        "average_gpu_instances": gpu_instances,
        "pages_per_month": pages_month,
        "busy_pages_per_hour": busy,
        "capacity_pages_per_hour": capacity,
        "cost_per_1000_pages": 1000 * sum(lines.values()) / max(1.0, pages_month),
    }


PRICINGS = {  # --compare: the same traffic and setup, bought in each way
    "on-demand": {},
    "Spot": {"spot": True},
    "1-year Savings Plan": {"savings_plan": True},
    "office hours only, on-demand": {"office_hours": True},
    "office hours only, Spot": {"office_hours": True, "spot": True},
}


def compare(traffic: Traffic, setup: Setup, prices: dict) -> str:
    base = Setup(**{**setup.__dict__, "spot": False, "savings_plan": False, "office_hours": False})
    reference = monthly_cost(traffic, base, prices)["total"]
    rows = ["| bought as | GPU USD/month | total USD/month | saves |", "|---|---:|---:|---:|"]
    for name, change in PRICINGS.items():
        result = monthly_cost(traffic, Setup(**{**base.__dict__, **change}), prices)
        rows.append(
            f"| {name} | {result['lines']['GPU instances']:,.0f} | {result['total']:,.0f} | "
            f"{1 - result['total'] / reference:.0%} |"
        )
    rows += [
        "",
        f"Spot: {prices['spot_discount']:.0%} off (typical; an instance can be taken back at two minutes' notice). "
        f"Savings Plan: {prices['savings_plan_discount']['one_year_no_upfront']:.0%} off the always-on instances "
        "(assumed; see prices.json). Office hours: "
        f"{prices['office_hours_per_week']['hours']} h a week, every page in them.",
    ]
    return "\n".join(rows)


def render(result: dict, traffic: Traffic, setup: Setup, prices: dict) -> str:
    rows = [
        f"prices of {prices['date']} ({prices['region']}); {setup.instance_type} "
        f"{'Spot' if setup.spot else 'on-demand'}{', 1-year Savings Plan' if setup.savings_plan else ''}"
        f"{', office hours only' if setup.office_hours else ''}"
        f"{', one GPU shared by both stages' if setup.shared_gpu else ''}",
        f"traffic: {traffic.requests_per_day:g} requests/day x {traffic.pages_per_request:g} pages "
        f"= {result['pages_per_month']:,.0f} pages/month, busy hours at {result['busy_pages_per_hour']:,.0f} pages/h",
        "",
        "| item | USD/month |",
        "|---|---:|",
    ]
    rows += [f"| {name} | {value:,.2f} |" for name, value in result["lines"].items()]
    rows += [
        f"| **total** | **{result['total']:,.2f}** |",
        "",
        f"average GPU instances running: {result['average_gpu_instances']:.2f}",
        f"throughput at max scale: {result['capacity_pages_per_hour']:,.0f} pages/hour "
        f"({setup.per_page} per-page seconds, {setup.target_utilization:.0%} target utilisation)",
        f"cost per 1,000 pages: ${result['cost_per_1000_pages']:.2f}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--requests-per-day", type=float)
    parser.add_argument("--pages-per-request", type=float)
    parser.add_argument("--peak-factor", type=float, default=Traffic.peak_factor)
    parser.add_argument("--busy-hours", type=float, default=Traffic.busy_hours)
    parser.add_argument("--instance-type", default=Setup.instance_type)
    parser.add_argument("--spot", action="store_true")
    parser.add_argument("--savings-plan", action="store_true", help="a 1-year Savings Plan on the always-on instances")
    parser.add_argument("--office-hours", action="store_true", help="OfficeHoursOnly=true: zero outside office hours")
    parser.add_argument("--compare", action="store_true", help="also price on-demand, Spot, Savings Plan, office hours")
    parser.add_argument("--min", type=int, default=1, help="instances per model stage, minimum")
    parser.add_argument("--max", type=int, default=3, help="instances per model stage, maximum")
    parser.add_argument("--per-page", choices=["gpu_t4_estimate", "cpu_measured"], default=Setup.per_page)
    parser.add_argument("--prices", type=Path, default=PRICES)
    args = parser.parse_args(argv)
    prices = json.loads(args.prices.read_text())
    setup, traffic = PRESETS.get(args.preset, (None, Traffic()))
    traffic = Traffic(
        args.requests_per_day or traffic.requests_per_day,
        args.pages_per_request or traffic.pages_per_request,
        args.busy_hours,
        args.peak_factor,
    )
    options = {"spot": args.spot, "savings_plan": args.savings_plan, "office_hours": args.office_hours}
    if setup:
        setup = Setup(**{**setup.__dict__, **options, "per_page": args.per_page})
    else:
        setup = Setup(
            args.instance_type,
            detector_min=args.min,
            detector_max=args.max,
            recognizer_min=args.min,
            recognizer_max=args.max,
            per_page=args.per_page,
            **options,
        )
    print(render(monthly_cost(traffic, setup, prices), traffic, setup, prices))
    if args.compare:
        print()
        print(compare(traffic, setup, prices))


if __name__ == "__main__":
    main()
