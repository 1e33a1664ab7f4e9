"""The datacenter's Prometheus (Debian's `prometheus` package), as `vdcos up --prometheus` runs
it: its configuration, and the file-based service discovery that follows the datacenter.

Every vdcos target is scraped over mutual TLS with the `monitor:prometheus` certificate from the
datacenter CA (metrics/http.py refuses tenants and nodes); Prometheus's own web API is served
in TLS too and asks the same of its callers. The targets live in three files that
`vdcos.metrics.discovery` rewrites from etcd (API replicas, node agents, etcd members):
Prometheus re-reads them on change, so hosts that join or leave are followed without a reload."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import yaml

from vdcos.security.pki import TlsFiles

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
JOBS = ("vdcos-api", "vdcos-node", "etcd")
SCRAPE_INTERVAL_S = 15  # the agents read disk and NIC counters as often (metrics/agent.py)


def targets_file(folder: Path, job: str) -> Path:
    return folder / "targets" / f"{job}.json"


def write_targets(folder: Path, job: str, targets: Sequence[tuple[str, dict[str, str]]]) -> bool:
    """Each (address, labels); written whole (Prometheus may read it at any moment). Returns
    whether the file changed."""
    groups = [{"targets": [addr], "labels": labels} for addr, labels in sorted(targets)]
    path = targets_file(folder, job)
    text = json.dumps(groups, indent=1, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def configure(folder: Path, tls: TlsFiles | None) -> None:
    """prometheus.yml (the scrape jobs) and web.yml (its own TLS), in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    scrape = []
    for job in JOBS:
        cfg: dict[str, object] = {
            "job_name": job,
            "file_sd_configs": [{"files": [str(targets_file(folder, job))], "refresh_interval": "5s"}],
        }
        if tls is not None:
            cfg["scheme"] = "https"
            cfg["tls_config"] = {"ca_file": str(tls.ca), "cert_file": str(tls.cert), "key_file": str(tls.key)}
        scrape.append(cfg)
        if not targets_file(folder, job).exists():
            write_targets(folder, job, [])
    config = {"global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": "10s",
                         "evaluation_interval": "15s"},
              "scrape_configs": scrape}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    web: dict[str, object] = {}
    if tls is not None:
        web = {"tls_server_config": {"cert_file": str(tls.cert), "key_file": str(tls.key),
                                     "client_ca_file": str(tls.ca),
                                     "client_auth_type": "RequireAndVerifyClientCert"}}
    (folder / "web.yml").write_text(yaml.safe_dump(web))


def argv(folder: Path, listen: str, retention: str = "2d") -> list[str]:
    return [PROMETHEUS_BIN, f"--config.file={folder / 'prometheus.yml'}", f"--web.config.file={folder / 'web.yml'}",
            f"--storage.tsdb.path={folder / 'data'}", f"--storage.tsdb.retention.time={retention}",
            f"--web.listen-address={listen}", "--log.level=warn"]
