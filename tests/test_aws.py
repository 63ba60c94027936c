"""AWS deployment as code, checked offline: templates, workflow, deploy dry-runs, cost model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cfnlint.decode import decode

from deploy.aws import cost
from deploy.aws import deploy as deploy_script
from tests.conftest import REPO_ROOT

AWS = REPO_ROOT / "deploy" / "aws"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def template() -> dict:
    parsed, problems = decode(str(AWS / "template.yaml"))
    assert not problems
    return parsed


def resources(template: dict, kind: str) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


@pytest.mark.parametrize("name", ["template.yaml", "ecr.yaml"])
def test_cfn_lint_passes(name):
    result = subprocess.run([str(BIN / "cfn-lint"), str(AWS / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_tasks_reserve_a_gpu_unless_sharing_one(template):
    tasks = resources(template, "AWS::ECS::TaskDefinition")
    for name in ("DetectorTask", "RecognizerTask"):
        container = tasks[name]["Properties"]["ContainerDefinitions"][0]
        condition, shared, dedicated = container["ResourceRequirements"]["Fn::If"]
        assert condition == "SharedGpu" and shared == {"Ref": "AWS::NoValue"}
        assert dedicated == [{"Type": "GPU", "Value": "1"}]
        assert tasks[name]["Properties"]["RequiresCompatibilities"] == ["EC2"]
    assert tasks["FrontendTask"]["Properties"]["RequiresCompatibilities"] == ["FARGATE"]
    names = [c["Name"] for c in tasks["FrontendTask"]["Properties"]["ContainerDefinitions"]]
    assert names == ["envoy", "orchestrator", "adot-collector"]


def test_the_model_tasks_queue_what_every_orchestrator_may_send(template):
    from services.common.settings import DetectorSettings, OrchestratorSettings, RecognizerSettings, load

    frontends = template["Parameters"]["FrontendMax"]["Default"]
    pages, calls = OrchestratorSettings().max_pages_in_flight, OrchestratorSettings().recognizer_concurrency
    tasks = resources(template, "AWS::ECS::TaskDefinition")

    def loaded(task: str, cls):
        environment = tasks[task]["Properties"]["ContainerDefinitions"][0]["Environment"]
        return load(cls, {e["Name"]: e["Value"] for e in environment if "Name" in e})

    recognizer, detector = loaded("RecognizerTask", RecognizerSettings), loaded("DetectorTask", DetectorSettings)
    assert recognizer.batch_max_queue >= frontends * pages * calls
    assert detector.batch_max_queue >= frontends * pages
    # and gRPC's own cap on calls in progress leaves them room (it was 64 against a queue of 128 until 2026-12-04)
    assert recognizer.rpc_limit > recognizer.batch_max_queue and detector.rpc_limit > detector.batch_max_queue


def test_the_frontend_task_holds_every_page_in_flight_at_the_image_limits(template):
    from services.common.settings import OrchestratorSettings

    task = template["Resources"]["FrontendTask"]["Properties"]
    orchestrator = OrchestratorSettings()
    # each admitted page may hold its decoded pixels (HW_MAX_DECODED_MB) and its request while it is read;
    # Envoy and the collector take the rest
    pages_mb = orchestrator.max_pages_in_flight * (orchestrator.max_decoded_mb + orchestrator.max_image_bytes / 2**20)
    assert int(task["Memory"]) >= pages_mb + 512
    # and the cost estimate prices the task the template deploys
    prices = json.loads((AWS / "prices.json").read_text())["frontend_task"]
    assert (prices["vcpu"], prices["gb"]) == (int(task["Cpu"]) / 1024, int(task["Memory"]) / 1024)


def test_gpu_capacity_provider_uses_the_ecs_gpu_ami_with_managed_scaling(template):
    assert template["Parameters"]["GpuAmiId"]["Default"].startswith("/aws/service/ecs/optimized-ami/")
    assert "gpu" in template["Parameters"]["GpuAmiId"]["Default"]
    assert template["Parameters"]["GpuInstanceType"]["Default"] == "g4dn.xlarge"
    provider = resources(template, "AWS::ECS::CapacityProvider")["GpuCapacityProvider"]["Properties"]
    assert provider["AutoScalingGroupProvider"]["ManagedScaling"]["Status"] == "ENABLED"
    group = resources(template, "AWS::AutoScaling::AutoScalingGroup")["GpuAutoScalingGroup"]["Properties"]
    assert "Fn::If" in group["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"]


def test_each_stage_scales_on_its_own_within_parameter_bounds(template):
    targets = resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    for stage in ("Detector", "Recognizer", "Frontend"):
        properties = targets[f"{stage}ScalableTarget"]["Properties"]
        assert properties["MinCapacity"] == {"Ref": f"{stage}Min"}
        assert properties["MaxCapacity"] == {"Ref": f"{stage}Max"}
    policies = resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert len(policies) == 3 and all(
        p["Properties"]["PolicyType"] == "TargetTrackingScaling" for p in policies.values()
    )


def test_only_https_serves_traffic(template):
    listeners = resources(template, "AWS::ElasticLoadBalancingV2::Listener")
    for listener in listeners.values():
        properties = listener["Properties"]
        if properties["Protocol"] == "HTTPS":
            assert properties["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
        else:
            assert [a["Type"] for a in properties["DefaultActions"]] == ["redirect"]
            assert properties["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    groups = resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert groups["GrpcTargetGroup"]["Properties"]["ProtocolVersion"] == "GRPC"


def test_iam_has_no_wildcard_actions_and_scoped_resources(template):
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all(a != "*" and not a.endswith(":*") for a in actions), name
                if statement["Resource"] == "*":  # only for APIs without resource-level permissions
                    assert all(a.split(":")[0] in ("xray", "cloudwatch") for a in actions), name


def test_logs_alarms_budget_secret_and_rollback(template):
    for group in resources(template, "AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    alarms = {a["Properties"].get("MetricName") for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    assert {"TargetResponseTime", "UnHealthyHostCount", "nvidia_smi_utilization_memory", None} <= alarms
    assert resources(template, "AWS::CloudWatch::Dashboard")
    budget = next(iter(resources(template, "AWS::Budgets::Budget").values()))["Properties"]
    assert budget["Budget"]["TimeUnit"] == "MONTHLY"
    assert budget["NotificationsWithSubscribers"][0]["Subscribers"][0]["SubscriptionType"] == "EMAIL"
    assert resources(template, "AWS::SecretsManager::Secret")
    for service in resources(template, "AWS::ECS::Service").values():
        breaker = service["Properties"]["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
        assert breaker == {"Enable": True, "Rollback": True}
        assert service["Properties"]["ServiceConnectConfiguration"]["Enabled"] is True


def test_workflow_validates_and_uses_oidc_with_a_manual_production_gate():
    workflow = REPO_ROOT / ".github" / "workflows" / "deploy.yml"
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = workflow.read_text()
    assert "aws-access-key-id" not in text and "id-token: write" in text
    assert "environment: production" in text and "make test" in text
    jobs = yaml.safe_load(text)["jobs"]
    staging = " ".join(step.get("run", "") for step in jobs["deploy-staging"]["steps"])
    production = " ".join(step.get("run", "") for step in jobs["deploy-production"]["steps"])
    assert "deploy.aws.smoke" in staging  # staging is smoke-tested before production is approved
    assert "promote --from-env staging" in production and " push " not in production  # no rebuild


def test_promote_copies_the_staged_images_by_digest():
    lines = dry_run("promote", "--from-env", "staging", "--env", "production", "--tag", "abc123")
    pulls = [line for line in lines if line.startswith("docker pull")]
    pushes = [line for line in lines if line.startswith("docker push")]
    assert len(pulls) == len(pushes) == len(deploy_script.IMAGES)
    assert "handwriting-staging-recognizer@" in pulls[1]
    assert "handwriting-production-recognizer:abc123" in pushes[1]
    assert not [line for line in lines if line.startswith("docker build")]


def dry_run(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.aws.deploy", *args, "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_push_dry_run_prints_the_exact_calls():
    lines = dry_run("push", "--env", "staging", "--tag", "abc123")
    assert lines[0].startswith("aws cloudformation deploy --region us-east-1 --stack-name handwriting-staging-ecr")
    builds = [line for line in lines if line.startswith("docker build")]
    pushes = [line for line in lines if line.startswith("docker push")]
    assert len(builds) == len(pushes) == len(deploy_script.IMAGES)
    assert "'${ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/handwriting-staging-recognizer:abc123'" in pushes[1]


def test_deploy_rollback_teardown_dry_runs(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"VpcId": "vpc-1", "AlertEmail": "a@b.c"}))
    lines = dry_run("deploy", "--env", "prod", "--tag", "v2", "--params", str(params))
    assert lines[0] == (
        "aws cloudformation deploy --region us-east-1 --stack-name handwriting-prod --template-file "
        "deploy/aws/template.yaml --capabilities CAPABILITY_IAM --parameter-overrides EnvironmentName=prod "
        "ImageTag=v2 VpcId=vpc-1 AlertEmail=a@b.c --no-fail-on-empty-changeset --tags project=handwriting-ocr "
        "environment=prod"
    )
    assert lines[1].startswith("aws ecs wait services-stable") and lines[1].endswith("detector recognizer frontend")
    rollback = dry_run("rollback", "--env", "prod", "--previous-tag", "v1")
    assert rollback[0].startswith("aws cloudformation describe-stacks") and "ImageTag=v1" in rollback[1]
    teardown = dry_run("teardown", "--env", "prod")
    assert "aws cloudformation delete-stack --region us-east-1 --stack-name handwriting-prod" in teardown
    assert teardown[-1].endswith("--stack-name handwriting-prod-ecr")


class RecordedAws(deploy_script.Runner):
    """Answers `aws` calls from recorded responses (the first matching command prefix); records every call."""

    def __init__(self, responses: dict[str, str | None]):
        super().__init__(dry_run=False)
        self.responses = responses
        self.calls: list[str] = []

    def __call__(self, *command: str, capture: bool = False) -> str:
        line = " ".join(command)
        self.calls.append(line)
        for prefix, response in self.responses.items():
            if line.startswith(prefix):
                if response is None:  # the CLI failed (e.g. "Stack with id ... does not exist")
                    raise subprocess.CalledProcessError(254, command)
                return response
        return ""


def verbs(calls: list[str]) -> list[str]:
    return [" ".join(call.split()[1:3]) for call in calls]


DESCRIBE = "aws cloudformation describe-stacks"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("UPDATE_COMPLETE", ["cloudformation deploy", "ecs wait"]),  # the usual: back to the previous tag
        ("UPDATE_ROLLBACK_COMPLETE", ["cloudformation deploy", "ecs wait"]),
        ("UPDATE_IN_PROGRESS", ["cloudformation cancel-update-stack", "cloudformation wait", "cloudformation deploy"]),
        ("UPDATE_ROLLBACK_FAILED", ["cloudformation continue-update-rollback", "cloudformation wait"]),
        ("UPDATE_ROLLBACK_IN_PROGRESS", ["cloudformation wait", "cloudformation deploy"]),
    ],
)
def test_rollback_from_each_state_it_meets(status, expected):
    aws = RecordedAws({DESCRIBE: status})
    deploy_script.rollback(aws, "prod", "us-east-1", "v1")
    assert verbs(aws.calls)[0] == "cloudformation describe-stacks"
    assert verbs(aws.calls)[1 : 1 + len(expected)] == expected
    deploys = [call for call in aws.calls if call.startswith("aws cloudformation deploy")]
    assert len(deploys) == 1 and "ImageTag=v1" in deploys[0]


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "CREATE_IN_PROGRESS", None])
def test_rollback_refuses_what_it_cannot_roll_back(status):
    aws = RecordedAws({DESCRIBE: status})
    with pytest.raises(deploy_script.RollbackError):
        deploy_script.rollback(aws, "prod", "us-east-1", "v1")
    assert not [call for call in aws.calls if "deploy " in call or "cancel" in call]


def test_rollback_of_a_stable_stack_needs_the_tag_to_go_back_to():
    with pytest.raises(deploy_script.RollbackError, match="previous-tag"):
        deploy_script.rollback(RecordedAws({DESCRIBE: "UPDATE_COMPLETE"}), "prod", "us-east-1", None)


def test_teardown_lifts_scale_in_protection_before_deleting():
    aws = RecordedAws(
        {
            DESCRIBE: "UPDATE_COMPLETE",
            "aws cloudformation describe-stack-resource": "handwriting-prod-gpu-asg",
            "aws autoscaling describe-auto-scaling-groups": "i-0a\ti-0b",
        }
    )
    deploy_script.teardown(aws, "prod", "us-east-1")
    protection = next(call for call in aws.calls if "set-instance-protection" in call)
    assert "--no-protected-from-scale-in" in protection and protection.endswith("--instance-ids i-0a i-0b")
    order = verbs(aws.calls)
    assert order.index("autoscaling set-instance-protection") < order.index("cloudformation delete-stack")
    assert "--desired-capacity 0" in next(call for call in aws.calls if "update-auto-scaling-group" in call)


def test_teardown_of_a_stack_already_gone_deletes_the_repositories_only():
    aws = RecordedAws({DESCRIBE: None})
    deploy_script.teardown(aws, "prod", "us-east-1")
    assert verbs(aws.calls).count("ecr delete-repository") == len(deploy_script.IMAGES)
    assert [call for call in aws.calls if "delete-stack" in call] == [
        "aws cloudformation delete-stack --region us-east-1 --stack-name handwriting-prod-ecr"
    ]


PRICES = json.loads((AWS / "prices.json").read_text())


def test_cost_of_one_instance_all_month_matches_the_planning_figure():
    setup, traffic = cost.PRESETS["single"]
    result = cost.monthly_cost(traffic, setup, PRICES)
    assert result["lines"]["GPU instances"] == pytest.approx(0.526 * 730)  # 383.98, the ~$380 plan
    assert result["average_gpu_instances"] == 1
    spot = cost.monthly_cost(traffic, cost.Setup(**{**setup.__dict__, "spot": True}), PRICES)
    assert spot["lines"]["GPU instances"] == pytest.approx(0.526 * 730 * 0.4)


def test_autoscaled_cost_is_in_the_planned_range():
    setup, traffic = cost.PRESETS["autoscaled"]
    result = cost.monthly_cost(traffic, setup, PRICES)
    # busy hours need 2 instances, quiet hours 1: (10 * 2 + 14 * 1) / 24
    assert result["average_gpu_instances"] == pytest.approx(34 / 24)
    assert result["lines"]["GPU instances"] == pytest.approx(34 / 24 * 0.526 * 730)
    assert 700 <= result["total"] <= 850  # with NAT, X-Ray at full sampling and Container Insights


def test_traffic_and_instance_arithmetic():
    busy, quiet = cost.hourly_pages(
        cost.Traffic(requests_per_day=3400, pages_per_request=1, busy_hours=10, peak_factor=3)
    )
    assert quiet == pytest.approx(3400 / 44) and busy == pytest.approx(3 * 3400 / 44)
    assert cost.instances_needed(36000, 0.1, 0.5, 1, 5) == 2  # 3600 s of work per hour at 50% target
    assert cost.instances_needed(0, 0.1, 0.5, 1, 5) == 1
    assert cost.instances_needed(10**9, 0.1, 0.5, 1, 5) == 5
    separate = cost.monthly_cost(cost.Traffic(100, 1), cost.Setup(), PRICES)
    assert separate["average_gpu_instances"] == 2  # one per stage at minimum


def test_the_example_parameters_deploy_what_the_autoscaled_cost_prices():
    params = json.loads((AWS / "example-params.json").read_text())
    setup, _ = cost.PRESETS["autoscaled"]
    assert params["ShareOneGpu"] == "true" and setup.shared_gpu  # both stages on each GPU instance
    assert (int(params["DetectorMax"]), int(params["RecognizerMax"])) == (setup.detector_max, setup.recognizer_max)
    # with a shared GPU each instance holds one task of each stage: the instance limit fits the task limits
    assert int(params["GpuInstancesMax"]) == max(setup.detector_max, setup.recognizer_max)
    result = cost.monthly_cost(cost.PRESETS["autoscaled"][1], setup, PRICES)
    assert result["total"] <= float(params["MonthlyBudgetUsd"])


def test_gpu_metrics_are_emitted_and_their_silence_alarms(template):
    user_data = json.dumps(template["Resources"]["GpuLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"])
    for needed in ("nvidia_gpu", "utilization_memory", "amazon-cloudwatch-agent-ctl"):
        assert needed in user_data
    alarm = template["Resources"]["GpuMemoryAlarm"]["Properties"]
    assert (
        alarm["MetricName"] == "nvidia_smi_utilization_memory"
        and alarm["TreatMissingData"] == BREACHING_UNLESS_SCHEDULED
    )


def test_the_load_balancer_speaks_tls_to_envoy(template):
    for name in ("GrpcTargetGroup", "RestTargetGroup"):
        assert template["Resources"][name]["Properties"]["Protocol"] == "HTTPS"
    containers = template["Resources"]["FrontendTask"]["Properties"]["ContainerDefinitions"]
    envoy = next(c for c in containers if c["Name"] == "envoy")
    assert {"Name": "HW_TLS_SELF_SIGNED", "Value": "true"} in envoy["Environment"]


# silence breaches the alarm, unless the stack is scaled to zero outside office hours on purpose
BREACHING_UNLESS_SCHEDULED = {"Fn::If": ["OfficeHours", "notBreaching", "breaching"]}


def test_office_hours_scale_every_stage_to_zero_and_back(template):
    targets = resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    for stage in ("Detector", "Recognizer", "Frontend"):
        condition, actions, otherwise = targets[f"{stage}ScalableTarget"]["Properties"]["ScheduledActions"]["Fn::If"]
        assert condition == "OfficeHours" and otherwise == {"Ref": "AWS::NoValue"}
        start, end = actions
        assert start["Schedule"] == {"Ref": "OfficeHoursStart"} and end["Schedule"] == {"Ref": "OfficeHoursEnd"}
        assert end["ScalableTargetAction"] == {"MinCapacity": 0, "MaxCapacity": 0}
        assert start["ScalableTargetAction"]["MinCapacity"] == {"Ref": f"{stage}Min"}


def test_model_stages_scale_on_their_queue_and_silent_metrics_alarm(template):
    policies = resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    for stage in ("detector", "recognizer"):
        config = policies[f"{stage.title()}Scaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        metric = config["CustomizedMetricSpecification"]
        assert (metric["Namespace"], metric["MetricName"], metric["Statistic"]) == (
            "HandwritingOCR",
            "QueueDepth",
            "Average",
        )
        assert metric["Dimensions"] == [{"Name": "Service", "Value": stage}]
        assert config["TargetValue"] == {"Ref": f"{stage.title()}QueueTarget"}
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    for stage in ("Detector", "Recognizer", "Orchestrator"):
        alarm = alarms[f"{stage}MetricsSilentAlarm"]["Properties"]
        assert alarm["TreatMissingData"] == BREACHING_UNLESS_SCHEDULED and alarm["Statistic"] == "SampleCount"
        assert alarm["Namespace"] == "HandwritingOCR"
    emitting = set()
    for task in resources(template, "AWS::ECS::TaskDefinition").values():
        for container in task["Properties"]["ContainerDefinitions"]:
            if {"Name": "HW_METRICS", "Value": "emf"} in container.get("Environment", []):
                emitting.add(container["Name"])
    assert emitting >= {"detector", "recognizer", "orchestrator"}


def test_spot_savings_plan_and_office_hours_each_cost_less_than_on_demand():
    setup, traffic = cost.PRESETS["single"]
    on_demand = cost.monthly_cost(traffic, setup, PRICES)
    for change in cost.PRICINGS.values():
        if change:
            cheaper = cost.monthly_cost(traffic, cost.Setup(**{**setup.__dict__, **change}), PRICES)
            assert cheaper["total"] < on_demand["total"], change
    office = cost.monthly_cost(traffic, cost.Setup(**{**setup.__dict__, "office_hours": True}), PRICES)
    # one instance for 60 of the week's 168 hours
    assert office["lines"]["GPU instances"] == pytest.approx(on_demand["lines"]["GPU instances"] * 60 / 168)
    assert "| office hours only, Spot |" in cost.compare(traffic, setup, PRICES)
