"""Checks a running casegate gateway with an independent gRPC stack (Python grpcio).

Usage: python health_and_reflection.py DATA_DIR ADDRESS [ORG]

Connects with the dev organisation's client certificate from DATA_DIR/pki, asks
grpc.health.v1 for the gateway's status and server reflection for its services, prints both,
and exits non-zero unless the gateway is SERVING and lists the three casegate.v1 services.
"""

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

EXPECTED = {
    "casegate.v1.AuditService",
    "casegate.v1.ConsentService",
    "casegate.v1.DisclosureService",
}


def main() -> int:
    data, address = Path(sys.argv[1]), sys.argv[2]
    org = sys.argv[3] if len(sys.argv) > 3 else "clinic"
    pki = data / "pki"
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{org}.key").read_bytes(),
        certificate_chain=(pki / f"{org}.pem").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(address, credentials, options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        serving = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
        print(f"health: {serving}")

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        services = set()
        for response in reflection.ServerReflectionInfo(iter([request]), timeout=10):
            services.update(s.name for s in response.list_services_response.service)
        for name in sorted(services):
            print(f"service: {name}")

    missing = EXPECTED - services
    if serving != "SERVING" or missing:
        print(f"FAILED: status {serving}, missing {sorted(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
