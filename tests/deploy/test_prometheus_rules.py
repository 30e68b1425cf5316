"""deploy/prometheus/alerts.yml: valid for Prometheus, naming only metrics the service exports, and
firing when the drift statistic stays over its threshold (promtool's rule unit tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.operations.metrics import Metrics
from tests.support.paths import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMTOOL = shutil.which("promtool") or "promtool"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool here (scripts/test.sh installs it)"
)


def rules() -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def exported_metric_names() -> set[str]:
    metrics = Metrics()
    metrics.input_drift.labels("1").set(0.5)
    metrics.input_drift_threshold.labels("1").set(2.0)
    exposition = metrics.exposition().decode()
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def test_drift_alert_compares_the_statistic_with_its_threshold() -> None:
    (drift,) = [rule for rule in rules() if rule["alert"] == "MnistInputDrift"]
    assert drift["expr"] == "mnist_input_drift > mnist_input_drift_threshold"
    assert drift["for"] == "10m"


def test_every_rule_names_metrics_the_service_exports() -> None:
    exported = exported_metric_names()
    for rule in rules():
        named = set(re.findall(r"\bmnist_\w+", str(rule["expr"])))
        assert named and named <= exported, (rule["alert"], named - exported)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rules found" in result.stdout


@needs_promtool
def test_alert_fires_after_ten_minutes_over_the_threshold(tmp_path: Path) -> None:
    """Version 2 drifts from minute 5 on, version 1 never: only version 2's alert fires, and only once
    its statistic has stayed over the threshold for ten minutes."""
    unit_tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'mnist_input_drift{version="1"}', "values": "1.2+0x30"},
                    {"series": 'mnist_input_drift_threshold{version="1"}', "values": "2+0x30"},
                    {"series": 'mnist_input_drift{version="2"}', "values": "1+0x4 40+0x25"},
                    {"series": 'mnist_input_drift_threshold{version="2"}', "values": "2+0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "12m", "alertname": "MnistInputDrift", "exp_alerts": []},
                    {
                        "eval_time": "16m",
                        "alertname": "MnistInputDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "version": "2"},
                                "exp_annotations": {
                                    "summary": "Inputs to model version 2 no longer look like MNIST digits",
                                    "description": (
                                        "The drift statistic of version 2 is 40.0, over its publish-time "
                                        "threshold, for 10 minutes: uploads, corrupted images or non-digits "
                                        "are arriving, or a new population of writers. Look at the page's "
                                        "monitoring panel and at the feedback accuracy before trusting the "
                                        "answers."
                                    ),
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(unit_tests))
    result = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
