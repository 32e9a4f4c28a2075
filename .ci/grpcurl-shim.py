#!/usr/bin/env python3
"""A reflection client with grpcurl's command-line shape, for CI.

grpcurl is not packaged for every build machine, so CI runs the README's
grpcurl commands through this instead. It supports the subset the README
uses: `grpcurl -plaintext [-d JSON] ADDR SERVICE/METHOD` and
`grpcurl -plaintext ADDR list`. Like grpcurl, it learns the messages from the
server's reflection service, prints the response as JSON, and exits non-zero
with the status on error.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(argv):
    data = None
    args = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-plaintext":
            pass
        elif arg == "-d":
            i += 1
            data = argv[i]
        elif arg.startswith("-"):
            sys.exit(f"grpcurl-shim: unsupported flag {arg}")
        else:
            args.append(arg)
        i += 1
    if len(args) != 2:
        sys.exit("usage: grpcurl -plaintext [-d JSON] ADDR (list | SERVICE/METHOD)")
    addr, target = args
    channel = grpc.insecure_channel(addr)
    reflection = ProtoReflectionDescriptorDatabase(channel)
    if target == "list":
        for name in sorted(reflection.get_services()):
            print(name)
        return 0
    service_name, _, method_name = target.replace("/", ".").rpartition(".")
    pool = descriptor_pool.DescriptorPool(reflection)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(data or "{}", request_class())
    call = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        response = call(request, timeout=30)
    except grpc.RpcError as err:
        print(f"ERROR:\n  Code: {err.code().name}\n  Message: {err.details()}", file=sys.stderr)
        return 1
    print(json.dumps(json_format.MessageToDict(response), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
