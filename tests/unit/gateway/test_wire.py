"""Pairing writes: a response's head leaves with its body, and nothing is lost or
reordered on the way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from proctor.gateway.wire import Pairing


class Recorder:
    """A transport that keeps what was written to it, as the kernel would see it."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.sends.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.sends.append(b"<eof>")

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def in_a_round(scenario: Callable[[Pairing, Recorder], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        recorder = Recorder()
        paired = Pairing(recorder)  # type: ignore[arg-type]
        return await scenario(paired, recorder)

    return asyncio.run(run())


async def next_round() -> None:
    await asyncio.sleep(0)


class TestPairing:
    def test_a_head_and_its_body_leave_in_one_send(self) -> None:
        """Two writes in one round reach the transport as one write, in order."""

        async def scenario(paired: Pairing, recorder: Recorder) -> list[bytes]:
            paired.write(b"HTTP/1.1 200 OK\r\n\r\n")
            paired.write(b"body")
            await next_round()
            return recorder.sends

        assert in_a_round(scenario) == [b"HTTP/1.1 200 OK\r\n\r\nbody"]

    def test_a_lone_write_leaves_at_the_end_of_its_round(self) -> None:
        """A write with nothing after it is held only until the loop moves on."""

        async def scenario(paired: Pairing, recorder: Recorder) -> list[list[bytes]]:
            paired.write(b"event: message\r\n\r\n")
            held = list(recorder.sends)
            await next_round()
            return [held, recorder.sends]

        assert in_a_round(scenario) == [[], [b"event: message\r\n\r\n"]]

    def test_many_writes_keep_their_order(self) -> None:
        """Whatever the pairing, the bytes sent are the bytes written, in order."""

        async def scenario(paired: Pairing, recorder: Recorder) -> bytes:
            for number in range(7):
                paired.write(b"%d," % number)
                if number % 3 == 0:
                    await next_round()
            await next_round()
            return b"".join(recorder.sends)

        assert in_a_round(scenario) == b"0,1,2,3,4,5,6,"

    def test_empty_writes_are_not_sent(self) -> None:
        """An empty body (the end of a sized response) makes no send."""

        async def scenario(paired: Pairing, recorder: Recorder) -> list[bytes]:
            paired.write(b"")
            paired.write(b"head")
            paired.write(b"")
            await next_round()
            return recorder.sends

        assert in_a_round(scenario) == [b"head"]

    def test_closing_sends_what_is_held_first(self) -> None:
        """A refusal written just before the line closes still reaches the agent."""

        async def scenario(paired: Pairing, recorder: Recorder) -> tuple[Any, ...]:
            paired.write(b"HTTP/1.1 431 Too Large\r\n\r\n")
            paired.close()
            await next_round()
            return recorder.sends, recorder.closed

        assert in_a_round(scenario) == ([b"HTTP/1.1 431 Too Large\r\n\r\n"], True)

    def test_aborting_drops_what_is_held(self) -> None:
        """An aborted line sends nothing more, not even later in the round."""

        async def scenario(paired: Pairing, recorder: Recorder) -> tuple[Any, ...]:
            paired.write(b"half an answer")
            paired.abort()
            await next_round()
            return recorder.sends, recorder.aborted

        assert in_a_round(scenario) == ([], True)

    def test_writelines_pairs_like_write(self) -> None:
        """A head written as several pieces still leaves with its body."""

        async def scenario(paired: Pairing, recorder: Recorder) -> list[bytes]:
            paired.writelines([b"HTTP/1.1 200 OK\r\n", b"\r\n"])
            paired.write(b"body")
            await next_round()
            return recorder.sends

        assert in_a_round(scenario) == [b"HTTP/1.1 200 OK\r\n\r\nbody"]

    def test_the_end_of_writing_comes_after_what_is_held(self) -> None:
        """write_eof sends what is held before ending the stream."""

        async def scenario(paired: Pairing, recorder: Recorder) -> list[bytes]:
            paired.write(b"last words")
            paired.write_eof()
            await next_round()
            return recorder.sends

        assert in_a_round(scenario) == [b"last words", b"<eof>"]

    def test_held_bytes_count_in_the_write_buffer(self) -> None:
        """Flow control sees the bytes held back as well as the transport's own."""

        async def scenario(paired: Pairing, recorder: Recorder) -> int:
            paired.write(b"12345")
            size = paired.get_write_buffer_size()
            await next_round()
            return size

        assert in_a_round(scenario) == 5

    def test_everything_else_is_the_transports(self) -> None:
        """Other transport calls reach the wrapped transport unchanged."""

        async def scenario(paired: Pairing, recorder: Recorder) -> object:
            return paired.get_extra_info("peername")

        assert in_a_round(scenario) == "extra:peername"
