#!/usr/bin/env python3
"""The README's grpcurl walkthrough, through the generated Python stubs.

Against a running stack: CreateUser, CreateOrder, UpdateOrderStatus
(PROCESSING), then GetUserProfile and GetOrder reading their own writes
(`min_version`), ListOrdersByUser and ListOrdersByStatus, asserting what
each returns. Then one bad request: a CreateUser with a malformed email must
fail with INVALID_ARGUMENT and a `google.rpc.BadRequest` field violation
naming `email`.

Every id is fresh per run, so it can run again against the same stack.
Exits 0 when every check holds, 1 with the failed check otherwise.

    python walkthrough.py [--command-addr HOST:PORT] [--query-addr HOST:PORT]
                          [--wait-ready SECONDS]
"""

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

# Stubs from generate.sh; PYTHONPATH, if set, wins over the default gen/.
sys.path.append(str(Path(__file__).resolve().parent / "gen"))

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

try:
    from dynabridge.v1 import command_service_pb2 as cmd
    from dynabridge.v1 import command_service_pb2_grpc as cmd_grpc
    from dynabridge.v1 import common_pb2 as common
    from dynabridge.v1 import query_service_pb2 as query
    from dynabridge.v1 import query_service_pb2_grpc as query_grpc
except ImportError as missing:
    sys.exit(f"{missing}: generate the stubs first (./generate.sh)")

# Per call. Generous: a `min_version` wait ends at the server's cap (5 s).
TIMEOUT_S = 10.0


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def wait_ready(channel, service, deadline):
    """Polls gRPC health until `service` is SERVING or the deadline passes."""
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    while True:
        try:
            reply = health.Check(request, timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass  # not listening yet
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{service} not SERVING in time")
        time.sleep(0.1)


def walkthrough(commands, queries):
    run = uuid.uuid4().hex[:12]
    correlation_id = f"corr-py-{run}"
    # Mixed case and spaces around it: the server trims and lower-cases.
    email_sent = f"  John.Doe+{run}@Example.COM "
    email_stored = f"john.doe+{run}@example.com"

    created = commands.CreateUser(
        cmd.CreateUserRequest(
            request_id=f"py-{run}-001",
            correlation_id=correlation_id,
            email=email_sent,
            name="John Doe",
        ),
        timeout=TIMEOUT_S,
    )
    user_id = created.user_id
    check(user_id, "CreateUser returns a user id")
    check(created.version == 1, f"CreateUser version is 1, got {created.version}")
    check(len(created.event_ids) == 1, f"CreateUser appends one event, got {list(created.event_ids)}")
    check(created.correlation_id == correlation_id, "CreateUser echoes the correlation id")
    print(f"CreateUser: user {user_id}, version {created.version}")

    usd = lambda minor: common.Money(currency_code="USD", amount_minor=minor)  # noqa: E731
    items = [
        common.OrderItem(sku="laptop", quantity=1, unit_price=usd(99999)),
        common.OrderItem(sku="mouse", quantity=2, unit_price=usd(2500)),
    ]
    expected_total = usd(99999 + 2 * 2500)
    # No `total`: the server computes it.
    order = commands.CreateOrder(
        cmd.CreateOrderRequest(request_id=f"py-{run}-002", user_id=user_id, items=items),
        timeout=TIMEOUT_S,
    )
    order_id = order.order_id
    check(order_id, "CreateOrder returns an order id")
    check(order.version == 1, f"CreateOrder version is 1, got {order.version}")
    check(order.total == expected_total, f"CreateOrder total is {expected_total}, got {order.total}")
    print(f"CreateOrder: order {order_id}, total {order.total.amount_minor} {order.total.currency_code}")

    moved = commands.UpdateOrderStatus(
        cmd.UpdateOrderStatusRequest(
            request_id=f"py-{run}-003",
            order_id=order_id,
            status=common.ORDER_STATUS_PROCESSING,
        ),
        timeout=TIMEOUT_S,
    )
    check(moved.version == 2, f"UpdateOrderStatus version is 2, got {moved.version}")
    check(len(moved.event_ids) == 1, "UpdateOrderStatus appends one event")
    print(f"UpdateOrderStatus: version {moved.version}")

    # Read your own writes: wait for exactly the versions the commands returned.
    profile = queries.GetUserProfile(
        query.GetUserProfileRequest(user_id=user_id, min_version=created.version),
        timeout=TIMEOUT_S,
    ).user
    check(profile.user_id == user_id, "GetUserProfile returns the user")
    check(profile.email == email_stored, f"email normalised to {email_stored!r}, got {profile.email!r}")
    check(profile.name == "John Doe", f"name is 'John Doe', got {profile.name!r}")
    check(profile.version == 1, f"profile version is 1, got {profile.version}")
    check(profile.HasField("create_time"), "profile has a create_time")
    print(f"GetUserProfile: {profile.email}, version {profile.version}")

    summary = queries.GetOrder(
        query.GetOrderRequest(order_id=order_id, min_version=moved.version),
        timeout=TIMEOUT_S,
    ).order
    check(summary.order_id == order_id and summary.user_id == user_id, "GetOrder returns the order")
    check(summary.status == common.ORDER_STATUS_PROCESSING, f"status is PROCESSING, got {summary.status}")
    check(summary.version == 2, f"order version is 2, got {summary.version}")
    check(summary.total == expected_total, f"order total is {expected_total}, got {summary.total}")
    check(list(summary.items) == items, "order items are the ones sent")
    print(f"GetOrder: {common.OrderStatus.Name(summary.status)}, version {summary.version}")

    by_user = queries.ListOrdersByUser(
        query.ListOrdersByUserRequest(user_id=user_id, page_size=20), timeout=TIMEOUT_S
    )
    check([o.order_id for o in by_user.orders] == [order_id], "ListOrdersByUser lists exactly the order")
    check(by_user.orders[0].status == common.ORDER_STATUS_PROCESSING, "listed order is PROCESSING")
    check(by_user.next_page_token == "", "ListOrdersByUser has one page")
    print(f"ListOrdersByUser: {len(by_user.orders)} order")

    # Other runs against the same stack may have PROCESSING orders too: page.
    found, token, pages = None, "", 0
    while found is None and pages < 50:
        page = queries.ListOrdersByStatus(
            query.ListOrdersByStatusRequest(
                status=common.ORDER_STATUS_PROCESSING, page_size=100, page_token=token
            ),
            timeout=TIMEOUT_S,
        )
        pages += 1
        check(
            all(o.status == common.ORDER_STATUS_PROCESSING for o in page.orders),
            "ListOrdersByStatus lists only PROCESSING orders",
        )
        found = next((o for o in page.orders if o.order_id == order_id), None)
        token = page.next_page_token
        if not token:
            break
    check(found is not None, "ListOrdersByStatus(PROCESSING) lists the order")
    check(found.version == 2, f"listed order version is 2, got {found.version}")
    print(f"ListOrdersByStatus: order found on page {pages}")

    bad_request(commands, run)


def bad_request(commands, run):
    """A malformed email: INVALID_ARGUMENT with a BadRequest naming `email`."""
    try:
        commands.CreateUser(
            cmd.CreateUserRequest(request_id=f"py-{run}-004", email="not-an-email", name="Jane Doe"),
            timeout=TIMEOUT_S,
        )
    except grpc.RpcError as err:
        check(err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"code is INVALID_ARGUMENT, got {err.code()}")
        # Decodes the `grpc-status-details-bin` trailer into google.rpc.Status.
        status = rpc_status.from_call(err)
        check(status is not None, "the error carries google.rpc.Status details")
        violations = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(bad.field_violations)
        fields = [v.field for v in violations]
        check("email" in fields, f"a BadRequest field violation names 'email', got {fields}")
        print(f"CreateUser(bad email): {err.code().name}, violations {fields}")
        return
    raise CheckFailed("CreateUser with a malformed email succeeded")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--command-addr",
        default=os.environ.get("DYNABRIDGE_COMMAND_ADDR", "127.0.0.1:50051"),
        help="CommandService address (env DYNABRIDGE_COMMAND_ADDR, default %(default)s)",
    )
    parser.add_argument(
        "--query-addr",
        default=os.environ.get("DYNABRIDGE_QUERY_ADDR", "127.0.0.1:50052"),
        help="QueryService address (env DYNABRIDGE_QUERY_ADDR, default %(default)s)",
    )
    parser.add_argument(
        "--wait-ready",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for both services' health to be SERVING",
    )
    args = parser.parse_args()

    with grpc.insecure_channel(args.command_addr) as cc, grpc.insecure_channel(args.query_addr) as qc:
        try:
            if args.wait_ready > 0:
                deadline = time.monotonic() + args.wait_ready
                wait_ready(cc, "dynabridge.v1.CommandService", deadline)
                wait_ready(qc, "dynabridge.v1.QueryService", deadline)
            walkthrough(cmd_grpc.CommandServiceStub(cc), query_grpc.QueryServiceStub(qc))
        except CheckFailed as failed:
            print(f"FAILED: {failed}", file=sys.stderr)
            return 1
        except grpc.RpcError as err:
            print(f"FAILED: unexpected {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print("Python client walkthrough: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
