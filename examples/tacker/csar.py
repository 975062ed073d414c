"""The VNF package every workflow instantiates: a minimal ETSI SOL004 CSAR with one VDU and no connection
point, for Tacker's v2 OpenStack infra driver (a base HOT with one OS::Nova::Server).

Built at run time into the run's folder. The ETSI SOL001 type definitions it imports are not in this
repository: they are read from the installed Tacker wheel, which ships them among its unit tests
(`tacker/tests/unit/vnfm/infra_drivers/openstack/data/etsi_nfv/`), or from a folder given explicitly.

    python examples/tacker/csar.py OUT.zip [--types DIR] [--vnfd-id UUID]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import os
import uuid
import zipfile
from pathlib import Path

TYPE_FILES = ("etsi_nfv_sol001_common_types.yaml", "etsi_nfv_sol001_vnfd_types.yaml")
WHEEL_TYPES = "tacker/tests/unit/vnfm/infra_drivers/openstack/data/etsi_nfv"
FLAVOUR = "simple"
VDU = "VDU1"
REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MANOBENCH_TACKER_VENV", REPO / ".venv-tacker"))

META = """TOSCA-Meta-File-Version: 1.0
CSAR-Version: 1.1
Created-by: manobench
Entry-Definitions: Definitions/manobench_top.vnfd.yaml
"""

TYPES = """tosca_definitions_version: tosca_simple_yaml_1_2
description: manobench's no-op VNF, its node type
imports:
  - etsi_nfv_sol001_common_types.yaml
  - etsi_nfv_sol001_vnfd_types.yaml
node_types:
  manobench.nop.VNF:
    derived_from: tosca.nodes.nfv.VNF
    properties:
      descriptor_id:
        type: string
        constraints: [ valid_values: [ {vnfd_id} ] ]
        default: {vnfd_id}
      descriptor_version:
        type: string
        default: '1.0'
      provider:
        type: string
        default: manobench
      product_name:
        type: string
        default: nop
      software_version:
        type: string
        default: '1.0'
      vnfm_info:
        type: list
        entry_schema:
          type: string
          constraints: [ valid_values: [ Tacker ] ]
        default: [ Tacker ]
      flavour_id:
        type: string
        constraints: [ valid_values: [ {flavour} ] ]
        default: {flavour}
      flavour_description:
        type: string
        default: one VDU, no connection point
    interfaces:
      Vnflcm:
        type: tosca.interfaces.nfv.Vnflcm
"""

TOP = """tosca_definitions_version: tosca_simple_yaml_1_2
description: manobench's no-op VNF (one VDU), top-level descriptor
imports:
  - etsi_nfv_sol001_common_types.yaml
  - etsi_nfv_sol001_vnfd_types.yaml
  - manobench_types.yaml
  - manobench_df_{flavour}.yaml
topology_template:
  inputs:
    selected_flavour:
      type: string
      description: the deployment flavour chosen at instantiation
  node_templates:
    VNF:
      type: manobench.nop.VNF
      properties:
        flavour_id: {{ get_input: selected_flavour }}
        descriptor_id: {vnfd_id}
        provider: manobench
        product_name: nop
        software_version: '1.0'
        descriptor_version: '1.0'
        vnfm_info: [ Tacker ]
        flavour_description: ''
"""

DF = """tosca_definitions_version: tosca_simple_yaml_1_2
description: manobench's no-op VNF, deployment flavour {flavour}
imports:
  - etsi_nfv_sol001_common_types.yaml
  - etsi_nfv_sol001_vnfd_types.yaml
  - manobench_types.yaml
topology_template:
  inputs:
    descriptor_id:
      type: string
    descriptor_version:
      type: string
    provider:
      type: string
    product_name:
      type: string
    software_version:
      type: string
    vnfm_info:
      type: list
      entry_schema:
        type: string
    flavour_id:
      type: string
    flavour_description:
      type: string
  substitution_mappings:
    node_type: manobench.nop.VNF
    properties:
      flavour_id: {flavour}
  node_templates:
    VNF:
      type: manobench.nop.VNF
      properties:
        flavour_description: one VDU, no connection point
    {vdu}:
      type: tosca.nodes.nfv.Vdu.Compute
      properties:
        name: {vdu}
        description: the one VDU of the no-op VNF
        vdu_profile:
          min_number_of_instances: 1
          max_number_of_instances: 1
        sw_image_data:
          name: manobench-nop-image
          version: '1.0'
          checksum:
            algorithm: sha-256
            hash: {image_hash}
          container_format: bare
          disk_format: raw
          min_disk: 0 GB
          min_ram: 0 MB
          size: 1 GB
      capabilities:
        virtual_compute:
          properties:
            requested_additional_capabilities:
              properties:
                requested_additional_capability_name: m1.tiny
                support_mandatory: true
                target_performance_parameters:
                  entry_schema: test
            virtual_memory:
              virtual_mem_size: 512 MB
            virtual_cpu:
              num_virtual_cpu: 1
            virtual_local_storage:
              - size_of_storage: 1 GB
  policies:
    - instantiation_levels:
        type: tosca.policies.nfv.InstantiationLevels
        properties:
          levels:
            instantiation_level_1:
              description: one instance of {vdu}
          default_level: instantiation_level_1
    - {vdu}_instantiation_levels:
        type: tosca.policies.nfv.VduInstantiationLevels
        properties:
          levels:
            instantiation_level_1:
              number_of_instances: 1
        targets: [ {vdu} ]
"""

HOT = """heat_template_version: 2013-05-23
description: manobench's no-op VNF, one server
parameters:
  nfv:
    type: json
resources:
  {vdu}:
    type: OS::Nova::Server
    properties:
      name: {vdu}
      flavor: {{ get_param: [ nfv, VDU, {vdu}, computeFlavourId ] }}
      image: {{ get_param: [ nfv, VDU, {vdu}, vcImageId ] }}
"""


def types_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the SOL001 type files are: `explicit`, else the Tacker package importable here, else the Tacker
    venv's site-packages."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    spec = importlib.util.find_spec("tacker")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p).parent / WHEEL_TYPES for p in spec.submodule_search_locations]
    candidates += [Path(p) for p in sorted(glob.glob(str(VENV / "lib" / "python3*" / "site-packages" / WHEEL_TYPES)))]
    for c in candidates:
        if all((c / f).is_file() for f in TYPE_FILES):
            return c
    raise FileNotFoundError(f"the ETSI SOL001 type files {TYPE_FILES} were found in none of "
                            f"{[str(c) for c in candidates]}: run examples/tacker/setup.sh")


def build(out: str | os.PathLike[str], vnfd_id: str | None = None,
          types: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Write the CSAR to `out`; returns (its path, its vnfdId)."""
    vnfd_id = vnfd_id or str(uuid.uuid4())
    src = types_dir(types)
    fill = {"vnfd_id": vnfd_id, "flavour": FLAVOUR, "vdu": VDU,
            "image_hash": hashlib.sha256(b"manobench-nop-image").hexdigest()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("TOSCA-Metadata/TOSCA.meta", META)
        for name in TYPE_FILES:
            z.write(src / name, f"Definitions/{name}")
        z.writestr("Definitions/manobench_types.yaml", TYPES.format(**fill))
        z.writestr("Definitions/manobench_top.vnfd.yaml", TOP.format(**fill))
        z.writestr(f"Definitions/manobench_df_{FLAVOUR}.yaml", DF.format(**fill))
        z.writestr(f"BaseHOT/{FLAVOUR}/manobench_hot_top.yaml", HOT.format(**fill))
    os.replace(tmp, out)
    return out, vnfd_id


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build manobench's one-VDU CSAR for Tacker.")
    p.add_argument("out")
    p.add_argument("--types", help="folder with the ETSI SOL001 type files (default: the installed Tacker's)")
    p.add_argument("--vnfd-id")
    a = p.parse_args(argv)
    path, vnfd_id = build(a.out, a.vnfd_id, a.types)
    print(f"{path} vnfdId={vnfd_id}")


if __name__ == "__main__":
    main()
