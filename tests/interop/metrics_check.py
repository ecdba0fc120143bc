"""Fetches a wsloop /metrics page and parses it with prometheus_client's text parser.

Usage: metrics_check.py URL

Prints one JSON object: {"name{label=value,...}": value} for every sample, so that the Rust
test can compare them value by value. A page the parser rejects fails the script.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        assert response.status == 200, response.status
        kind = response.headers["Content-Type"]
        assert kind.startswith("text/plain; version=0.0.4"), kind
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    json.dump(samples, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
