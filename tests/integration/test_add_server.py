"""`orchestrator add-server`: a machine enters the inventory, or a clear refusal that writes nothing."""

from __future__ import annotations

import json

from core.settings import Settings
from models.tables import Event, Server
from tests.integration.helpers import cli, rows


async def test_add_server_registers_it_for_the_sync_and_refuses_bad_input(settings: Settings) -> None:
    done = cli(
        settings, "add-server", "web-1", "--address", "10.0.0.5", "--ports", "9000-9009", "--provision", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "provisioning"

    for args, why in [
        (["web-1", "--address", "10.0.0.6"], "already registered"),
        (["web-2", "--address", "no such host!"], "neither an IP address nor a host name"),
        (["web-2", "--address", "10.0.0.7", "--ports", "9010-9000"], "port range 9010-9000 is empty"),
        (["web-2", "--address", "10.0.0.7", "--ports", "lots"], "is not START-END"),
        (["Web_2", "--address", "10.0.0.7"], "name"),
    ]:
        refused = cli(settings, "add-server", *args)
        assert refused.returncode == 2 and why in refused.stderr, (args, refused.stderr)

    servers = {s.name: s for s in await rows(settings, Server)}
    assert set(servers) == {"localhost", "web-1"}
    web = servers["web-1"]
    assert (web.address, web.port_range_start, web.port_range_end, web.connection) == ("10.0.0.5", 9000, 9009, "ssh")
    [event] = [e for e in await rows(settings, Event) if e.subject_type == "server" and e.subject_id == web.id]
    assert event.to_status == "provisioning" and "provisioning next" in event.reason
