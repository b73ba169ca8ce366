"""``LocalSocketPoster``, the relay's ``SocketPoster`` in the local gateway, against real
aiohttp WebSocket clients: text and binary messages from a worker thread and from the loop's own
thread (in order), the message limit at and past its edge, a close with the relay's code and
reason, and ``ConnectionGone`` for a socket unknown, closed, or still in its ``$connect``."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest

from hatchway_local.local_poster import LocalPoster, LocalSocketPoster
from hatchway_local.platform import WEBSOCKET_MAX_MESSAGE_BYTES
from hatchway_relay.ports import ConnectionGone, PostFailed
from support.socket_gateway import WAIT_SECONDS, Event, Served, socket_gateway, visitor


def socket_id(served: Served) -> str:
    [event] = served.function.wait_for("$connect")
    return str(event["requestContext"]["connectionId"])


async def receive(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await ws.receive(timeout=WAIT_SECONDS)


def test_text_and_binary_messages_reach_the_visitor_from_a_thread() -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        async def scenario() -> list[tuple[aiohttp.WSMsgType, object]]:
            async with visitor(served) as ws:
                sid = socket_id(served)
                loop = asyncio.get_running_loop()
                # From a worker thread, as a relay invocation posts.
                await loop.run_in_executor(None, poster.send, sid, "héllo".encode(), False)
                await loop.run_in_executor(None, poster.send, sid, b"\x00\xff", True)
                return [(m.type, m.data) for m in [await receive(ws), await receive(ws)]]

        assert asyncio.run(scenario()) == [
            (aiohttp.WSMsgType.TEXT, "héllo"),
            (aiohttp.WSMsgType.BINARY, b"\x00\xff"),
        ]


def test_posts_from_the_loops_own_thread_go_out_in_order() -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        async def scenario() -> list[object]:
            async with visitor(served) as ws:
                sid = socket_id(served)

                def post_three() -> None:
                    poster.send(sid, b"one", False)
                    poster.send(sid, b"two", True)
                    poster.send(sid, b"three", False)

                await asyncio.get_running_loop().run_in_executor(None, served.on_loop, post_three)
                return [(await receive(ws)).data for _ in range(3)]

        assert asyncio.run(scenario()) == ["one", b"two", "three"]


def test_an_agents_message_run_on_the_loop_is_passed_to_the_visitor() -> None:
    # The agents' API runs its invocations on the loop here: the relay's posts to the visitor
    # and to the agent are written once the invocation returns, in the order it made them.
    with socket_gateway(websocket_on_loop=True) as served:
        gateway = served.gateway
        sockets, agents = LocalSocketPoster(gateway), LocalPoster(gateway)
        on_loop: list[bool] = []

        def agent_function(event: Event, context: object) -> Event:
            if event["requestContext"]["routeKey"] == "$default":
                on_loop.append(gateway.in_loop_thread())
                sid, _, text = event["body"].partition(" ")
                sockets.send(sid, text.encode(), False)
                agents.post(event["requestContext"]["connectionId"], f"ack {sid}")
            return {"statusCode": 200}

        gateway.ws_handler = agent_function

        async def scenario() -> tuple[object, object]:
            async with visitor(served) as visitor_ws:
                sid = socket_id(served)
                async with visitor(served, "/connect", f"127.0.0.1:{served.port}") as agent_ws:
                    await agent_ws.send_str(f"{sid} from the app")
                    return (await receive(visitor_ws)).data, (await receive(agent_ws)).data

        assert asyncio.run(scenario()) == ("from the app", f"ack {socket_id(served)}")
        assert on_loop == [True]


def test_a_message_of_the_limit_is_sent_and_one_byte_more_fails() -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        async def scenario() -> int:
            async with visitor(served, max_msg_size=2 * WEBSOCKET_MAX_MESSAGE_BYTES) as ws:
                sid = socket_id(served)
                loop = asyncio.get_running_loop()
                largest = b"x" * WEBSOCKET_MAX_MESSAGE_BYTES
                await loop.run_in_executor(None, poster.send, sid, largest, True)
                with pytest.raises(PostFailed) as failed:
                    poster.send(sid, largest + b"x", True)
                assert str(WEBSOCKET_MAX_MESSAGE_BYTES) in failed.value.why
                return len((await receive(ws)).data)

        assert asyncio.run(scenario()) == WEBSOCKET_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("where", ["thread", "loop"])
def test_close_sends_the_relays_code_and_reason(where: str) -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        async def scenario() -> aiohttp.WSMessage:
            async with visitor(served) as ws:
                sid = socket_id(served)

                def last_words() -> None:
                    poster.send(sid, b"last", False)
                    poster.close(sid, 4000, "the app closed")

                loop = asyncio.get_running_loop()
                if where == "thread":
                    await loop.run_in_executor(None, last_words)
                else:
                    await loop.run_in_executor(None, served.on_loop, last_words)
                assert (await receive(ws)).data == "last"  # sent before the close
                return await receive(ws)

        closed = asyncio.run(scenario())
        [gone] = served.function.wait_for("$disconnect")
    assert (closed.type, closed.data, closed.extra) == (
        aiohttp.WSMsgType.CLOSE,
        4000,
        "the app closed",
    )
    assert gone["requestContext"]["disconnectStatusCode"] == 4000


def test_a_close_code_no_frame_may_carry_becomes_going_away() -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        async def scenario() -> object:
            async with visitor(served) as ws:
                sid = socket_id(served)
                await asyncio.get_running_loop().run_in_executor(
                    None, poster.close, sid, 1006, "abnormal"
                )
                return (await receive(ws)).data

        assert asyncio.run(scenario()) == 1001


@pytest.mark.parametrize("where", ["thread", "loop"])
def test_an_unknown_or_closed_socket_is_gone(where: str) -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        def send(sid: str) -> None:
            if where == "thread":
                poster.send(sid, b"hello", False)
            else:
                served.on_loop(lambda: poster.send(sid, b"hello", False))

        with pytest.raises(ConnectionGone):
            send("no-such-socket")
        poster.close("no-such-socket", 1000, "")  # nothing to close: nothing happens

        async def scenario() -> None:
            async with visitor(served):
                socket_id(served)

        asyncio.run(scenario())
        sid = socket_id(served)
        served.function.wait_for("$disconnect")
        with pytest.raises(ConnectionGone):
            send(sid)
        poster.close(sid, 1000, "")


def test_a_socket_in_its_connect_is_not_open_yet() -> None:
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)
        outcome: list[BaseException | None] = []
        tried = threading.Event()

        def connect(event: Event) -> Event:
            try:
                poster.send(event["requestContext"]["connectionId"], b"too early", False)
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)
            tried.set()
            return {"statusCode": 200}

        served.function.connect_result = connect

        async def scenario() -> None:
            async with visitor(served) as ws:
                await ws.send_str("after")
                served.function.wait_for("$default")

        asyncio.run(scenario())
        assert tried.wait(WAIT_SECONDS)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionGone)


def test_a_post_on_the_loop_to_a_socket_in_its_connect_goes_out_once_it_opens() -> None:
    # An agent's message handled on the loop (memory mode) cannot wait for the handshake by
    # sleeping: the handshake itself runs on that loop. Its post goes out once it is done.
    with socket_gateway() as served:
        poster = LocalSocketPoster(served.gateway)

        def connect(event: Event) -> Event:
            sid = event["requestContext"]["connectionId"]
            served.on_loop(lambda: poster.send(sid, b"the app spoke first", False))
            return {"statusCode": 200}

        served.function.connect_result = connect

        async def scenario() -> object:
            async with visitor(served) as ws:
                return (await receive(ws)).data

        assert asyncio.run(scenario()) == "the app spoke first"
