"""Build and push the images, deploy or update the stacks, roll back, tear down: one command each.

    python -m deploy.aws.deploy push     --env staging --tag v1 [--dry-run]
    python -m deploy.aws.deploy promote  --from-env staging --env production --tag v1 [--dry-run]
    python -m deploy.aws.deploy deploy   --env staging --tag v1 --params deploy/aws/staging.json [--dry-run]
    python -m deploy.aws.deploy rollback --env staging [--dry-run]
    python -m deploy.aws.deploy teardown --env staging [--dry-run]

Every step is an `aws` or `docker` CLI call; --dry-run prints them exactly, one per line, and needs
no credentials. Failed service deployments roll back on their own (ECS deployment circuit breaker);
a failed stack update rolls back by CloudFormation; `rollback` reads the stack's state first (cancels an
update in progress, continues a failed rollback, waits for one running) and redeploys the previous image
tag; `teardown` lifts the GPU instances' scale-in protection first, so the delete does not wait on them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
IMAGES = {
    "detector": "services/detector/Dockerfile",
    "recognizer": "services/recognizer/Dockerfile",
    "orchestrator": "services/orchestrator/Dockerfile",
    "envoy": "deploy/envoy/Dockerfile",
}
SERVICES = ("detector", "recognizer", "frontend")


class Runner:
    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def __call__(self, *command: str, capture: bool = False) -> str:
        line = shlex.join(command)
        if self.dry_run:
            print(line)
            return "<dry-run>"
        print(f"+ {line}", file=sys.stderr)
        result = subprocess.run(command, check=True, text=True, capture_output=capture, cwd=REPO_ROOT)
        return result.stdout.strip() if capture else ""


def registry(run: Runner, region: str) -> str:
    account = run("aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text", capture=True)
    if run.dry_run:
        account = "${ACCOUNT_ID}"
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


def ecr_stack(env: str) -> str:
    return f"handwriting-{env}-ecr"


def app_stack(env: str) -> str:
    return f"handwriting-{env}"


def push(run: Runner, env: str, tag: str, region: str) -> None:
    run(
        "aws",
        "cloudformation",
        "deploy",
        "--region",
        region,
        "--stack-name",
        ecr_stack(env),
        "--template-file",
        "deploy/aws/ecr.yaml",
        "--parameter-overrides",
        f"EnvironmentName={env}",
        "--no-fail-on-empty-changeset",
    )
    host = registry(run, region)
    password = run("aws", "ecr", "get-login-password", "--region", region, capture=True)
    if not run.dry_run:
        subprocess.run(
            ["docker", "login", "--username", "AWS", "--password-stdin", host], input=password, text=True, check=True
        )
    else:
        print(f"aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {host}")
    for name, dockerfile in IMAGES.items():
        image = f"{host}/handwriting-{env}-{name}:{tag}"
        run("docker", "build", "-f", dockerfile, "-t", image, ".")
        run("docker", "push", image)


def promote(run: Runner, source: str, env: str, tag: str, region: str) -> None:
    """Give `env` the very images `source` ran (same digests, no rebuild): each is pulled from the source
    repository by the digest its tag points at, and pushed to `env`'s repository under the same tag."""
    run(
        "aws", "cloudformation", "deploy", "--region", region, "--stack-name", ecr_stack(env),
        "--template-file", "deploy/aws/ecr.yaml", "--parameter-overrides", f"EnvironmentName={env}",
        "--no-fail-on-empty-changeset",
    )  # fmt: skip
    host = registry(run, region)
    password = run("aws", "ecr", "get-login-password", "--region", region, capture=True)
    if not run.dry_run:
        subprocess.run(
            ["docker", "login", "--username", "AWS", "--password-stdin", host], input=password, text=True, check=True
        )
    for name in IMAGES:
        digest = run(
            "aws", "ecr", "describe-images", "--region", region, "--repository-name", f"handwriting-{source}-{name}",
            "--image-ids", f"imageTag={tag}", "--query", "imageDetails[0].imageDigest", "--output", "text",
            capture=True,
        )  # fmt: skip
        if run.dry_run:
            digest = "${DIGEST}"
        tested = f"{host}/handwriting-{source}-{name}@{digest}"
        target = f"{host}/handwriting-{env}-{name}:{tag}"
        run("docker", "pull", tested)
        run("docker", "tag", tested, target)
        run("docker", "push", target)


def deploy(run: Runner, env: str, tag: str, region: str, params: Path | None) -> None:
    overrides = [f"EnvironmentName={env}", f"ImageTag={tag}"]
    if params:
        overrides += [f"{key}={value}" for key, value in json.loads(params.read_text()).items()]
    run(
        "aws",
        "cloudformation",
        "deploy",
        "--region",
        region,
        "--stack-name",
        app_stack(env),
        "--template-file",
        "deploy/aws/template.yaml",
        "--capabilities",
        "CAPABILITY_IAM",
        "--parameter-overrides",
        *overrides,
        "--no-fail-on-empty-changeset",
        "--tags",
        "project=handwriting-ocr",
        f"environment={env}",
    )
    run(
        "aws",
        "ecs",
        "wait",
        "services-stable",
        "--region",
        region,
        "--cluster",
        f"handwriting-{env}",
        "--services",
        *SERVICES,
    )


def stack_status(run: Runner, env: str, region: str) -> str:
    """The app stack's CloudFormation status (UPDATE_COMPLETE, UPDATE_IN_PROGRESS, ...); NONE when there is none.
    In a dry run: UPDATE_COMPLETE, the usual state after a finished deploy."""
    try:
        status = run(
            "aws", "cloudformation", "describe-stacks", "--region", region, "--stack-name", app_stack(env),
            "--query", "Stacks[0].StackStatus", "--output", "text", capture=True,
        )  # fmt: skip
    except subprocess.CalledProcessError:
        return "NONE"
    return "UPDATE_COMPLETE" if run.dry_run else status


class RollbackError(RuntimeError):
    pass


def rollback(run: Runner, env: str, region: str, previous_tag: str | None) -> None:
    """Back to the last good state from wherever the stack is: an update still running is cancelled (and its
    rollback awaited), a rollback that failed is continued, then the previous image tag is deployed."""
    status = stack_status(run, env, region)
    wait_rollback = ("aws", "cloudformation", "wait", "stack-rollback-complete", "--region", region)
    if status == "UPDATE_IN_PROGRESS":
        run("aws", "cloudformation", "cancel-update-stack", "--region", region, "--stack-name", app_stack(env))
        run(*wait_rollback, "--stack-name", app_stack(env))
    elif status == "UPDATE_ROLLBACK_FAILED":
        run("aws", "cloudformation", "continue-update-rollback", "--region", region, "--stack-name", app_stack(env))
        run(*wait_rollback, "--stack-name", app_stack(env))
    elif status == "UPDATE_ROLLBACK_IN_PROGRESS":
        run(*wait_rollback, "--stack-name", app_stack(env))
    elif status in ("NONE", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_COMPLETE"):
        raise RollbackError(f"{app_stack(env)} is {status}: nothing deployed to roll back to; deploy a tag instead")
    elif status.endswith("_IN_PROGRESS"):
        raise RollbackError(f"{app_stack(env)} is {status}: wait for it to finish, then roll back")
    # UPDATE_COMPLETE, CREATE_COMPLETE, UPDATE_ROLLBACK_COMPLETE: the stack is stable; redeploy the good tag
    if previous_tag:
        deploy(run, env, previous_tag, region, None)
    elif status.endswith("COMPLETE") and not status.startswith("UPDATE_ROLLBACK"):
        raise RollbackError("the stack is stable: give --previous-tag, the image tag to go back to")


def release_gpu_instances(run: Runner, env: str, region: str) -> None:
    """Let the GPU instances go: the capacity provider's managed termination protection keeps them (and so
    the stack delete waits on them) while they are protected from scale-in."""
    group = run(
        "aws", "cloudformation", "describe-stack-resource", "--region", region, "--stack-name", app_stack(env),
        "--logical-resource-id", "GpuAutoScalingGroup", "--query", "StackResourceDetail.PhysicalResourceId",
        "--output", "text", capture=True,
    )  # fmt: skip
    instances = run(
        "aws", "autoscaling", "describe-auto-scaling-groups", "--region", region, "--auto-scaling-group-names", group,
        "--query", "AutoScalingGroups[0].Instances[].InstanceId", "--output", "text", capture=True,
    ).split()  # fmt: skip
    if instances and not run.dry_run:
        run(
            "aws", "autoscaling", "set-instance-protection", "--region", region, "--auto-scaling-group-name", group,
            "--no-protected-from-scale-in", "--instance-ids", *instances,
        )  # fmt: skip
    run(
        "aws", "autoscaling", "update-auto-scaling-group", "--region", region, "--auto-scaling-group-name", group,
        "--min-size", "0", "--desired-capacity", "0",
    )  # fmt: skip


def teardown(run: Runner, env: str, region: str) -> None:
    if stack_status(run, env, region) != "NONE":
        release_gpu_instances(run, env, region)
        stack = ("--region", region, "--stack-name", app_stack(env))
        run("aws", "cloudformation", "delete-stack", *stack)
        run("aws", "cloudformation", "wait", "stack-delete-complete", *stack)
    for name in IMAGES:  # repositories with images cannot be deleted by CloudFormation
        run(
            "aws",
            "ecr",
            "delete-repository",
            "--region",
            region,
            "--repository-name",
            f"handwriting-{env}-{name}",
            "--force",
        )
    run("aws", "cloudformation", "delete-stack", "--region", region, "--stack-name", ecr_stack(env))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["push", "promote", "deploy", "rollback", "teardown"])
    parser.add_argument("--env", default="staging")
    parser.add_argument("--tag", default="latest")
    parser.add_argument("--previous-tag", help="rollback: image tag to redeploy")
    parser.add_argument("--from-env", default="staging", help="promote: the environment whose images to copy")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--params", type=Path, help="JSON of template parameters (VpcId, subnets, certificate...)")
    parser.add_argument("--dry-run", action="store_true", help="print the exact calls instead of making them")
    args = parser.parse_args(argv)
    run = Runner(args.dry_run)
    if args.action == "push":
        push(run, args.env, args.tag, args.region)
    elif args.action == "promote":
        promote(run, args.from_env, args.env, args.tag, args.region)
    elif args.action == "deploy":
        deploy(run, args.env, args.tag, args.region, args.params)
    elif args.action == "rollback":
        try:
            rollback(run, args.env, args.region, args.previous_tag)
        except RollbackError as error:
            print(f"rollback: {error}", file=sys.stderr)
            return 2
    else:
        teardown(run, args.env, args.region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
