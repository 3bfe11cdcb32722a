"""The SBOM of an image as CycloneDX 1.6 JSON, made with cyclonedx-python-lib (pure: no I/O).

One component per package found (OS packages and Python distributions, each with its
Package URL), the image itself as the BOM's subject (type container, its key and SIF
sha256), and the audit's findings as CycloneDX `vulnerabilities` pointing at the affected
components, so the one file is both the inventory and the vulnerability report.

Example:

    text = render(inventory, findings, image_name="numpy", key=key, sha256=sif_sha, scanned=now)
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityRating,
    VulnerabilityReference,
    VulnerabilityScoreSource,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from hpcml import __version__
from hpcml.images.advisories import Finding
from hpcml.images.inventory import Inventory, canonical_name

SCHEMA = SchemaVersion.V1_6


def render(inventory: Inventory, findings: Sequence[Finding], *, image_name: str, key: str, sha256: str,
           scanned: datetime) -> str:
    """The CycloneDX JSON text (validated against the 1.6 schema by the tests)."""
    bom = Bom()
    bom.metadata.timestamp = scanned
    bom.metadata.component = Component(
        name=image_name, version=key[:12], type=ComponentType.CONTAINER, bom_ref=f"image:{key}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)],
        properties=[Property(name="hpcml:key", value=key), Property(name="hpcml:version", value=__version__),
                    Property(name="hpcml:read-by", value=inventory.method)]
        + ([Property(name="hpcml:os", value=inventory.os_name)] if inventory.os_name else []),
    )
    refs: dict[tuple[str, str, str], str] = {}
    used: set[str] = set()
    for p in inventory.packages:
        purl = p.purl(inventory.distro)
        ref = purl if purl not in used else f"{purl}#{p.path}"
        used.add(ref)
        props = [Property(name="hpcml:ecosystem", value=p.ecosystem)]
        if p.path and p.ecosystem == "python":
            props.append(Property(name="hpcml:path", value=p.path))
        if p.source and p.source != p.name:
            props.append(Property(name="hpcml:source-package", value=f"{p.source} {p.source_version}"))
        bom.components.add(Component(
            name=p.name, version=p.version, type=ComponentType.LIBRARY, bom_ref=ref,
            purl=PackageURL.from_string(purl), properties=props,
            licenses=[LicenseExpression(p.license)] if p.license else None,
        ))
        refs.setdefault(_ident(p.ecosystem, p.name, p.version), ref)
    # The image contains every package: its dependency graph is this one level.
    bom.register_dependency(bom.metadata.component, list(bom.components))
    for f in findings:
        target = refs.get(_ident(f.ecosystem, f.package, f.version))
        bom.vulnerabilities.add(Vulnerability(
            id=f.id,
            source=VulnerabilitySource(name=f.source),
            references=[VulnerabilityReference(id=a, source=VulnerabilitySource(name="alias")) for a in f.aliases],
            ratings=[VulnerabilityRating(severity=VulnerabilitySeverity(f.severity),
                                         method=VulnerabilityScoreSource.OTHER)],
            description=f.summary or None,
            recommendation=f"upgrade {f.package} to {' or '.join(f.fixed)}" if f.fixed else None,
            affects=[BomTarget(ref=target)] if target else None,
        ))
    return make_outputter(bom, OutputFormat.JSON, SCHEMA).output_as_string(indent=2) + "\n"


def _ident(ecosystem: str, name: str, version: str) -> tuple[str, str, str]:
    return ecosystem, canonical_name(name) if ecosystem == "python" else name, version
