"""``maven-fast info``: build facts and which backends can run here."""
from __future__ import annotations

import json

HELP = "show how maven_fast was built and which backends can run on this machine"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args) -> int:
    import torch

    import maven_fast
    from maven_fast.backends import AUTO_GPU_DEFAULT, AUTO_GPU_REASON, auto_gpu_order

    info = maven_fast.build_info()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    backends = {d: maven_fast.available_backends(d) for d in devices}
    if args.json:
        print(json.dumps({"build": info, "backends": backends}, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    for device, table in backends.items():
        print(f"\nbackends for {device} tensors:")
        for name, problems in table.items():
            print(f"  {name:<7} {'available' if not problems else 'unavailable: ' + '; '.join(problems)}")
    print("\n`auto` on CUDA tensors tries, in order (estimates until a GPU benchmark replaces them):")
    for (op, dtype), reason in AUTO_GPU_REASON.items():
        order = ", ".join(auto_gpu_order(op, dtype))
        print(f"  {op} {str(dtype).replace('torch.', '')}: {order} - {reason}")
    print(f"  other ops: {', '.join(AUTO_GPU_DEFAULT)}")
    return 0
