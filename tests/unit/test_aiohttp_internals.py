"""The parts of aiohttp relay relies on beyond its documented API, pinned so that an aiohttp release that moves them
fails here, by name, rather than as a hang or a plain-text error page in some integration test.

``relay.listeners`` subclasses the private ``aiohttp.web_protocol.RequestHandler`` (reading and replacing
``self._request_handler``, overriding ``handle_error``) and builds it itself in place of ``web.Server.__call__``;
``relay.outbound`` uses client middlewares (aiohttp 3.12). pyproject.toml caps aiohttp below the next minor
release: raise the cap only after this file and the whole suite pass on it.
"""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_protocol import RequestHandler

from relay.listeners import ConnectionGuard, GuardedProtocolFactory, _JsonErrorHandler


def _slots(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())}


def test_request_handler_keeps_the_app_handler_in_a_slot_named_request_handler() -> None:
    assert "_request_handler" in _slots(RequestHandler)
    assert _JsonErrorHandler.__slots__ == ()  # adds no slot of its own: its instances stay dict-free


def test_handle_error_takes_request_status_exc_message() -> None:
    parameters = inspect.signature(RequestHandler.handle_error).parameters
    assert list(parameters) == ["self", "request", "status", "exc", "message"]
    assert [parameters[name].default for name in ("status", "exc", "message")] == [500, None, None]
    assert list(inspect.signature(_JsonErrorHandler.handle_error).parameters) == list(parameters)


def test_request_handler_is_built_from_a_server_with_keyword_loop_and_access_log() -> None:
    parameters = inspect.signature(RequestHandler.__init__).parameters
    assert list(parameters)[:2] == ["self", "manager"]
    for name in ("loop", "access_log"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_request_handler_is_the_asyncio_protocol_the_guard_forwards_to() -> None:
    forwarded = ("connection_made", "connection_lost", "data_received", "eof_received")
    for name in (*forwarded, "pause_writing", "resume_writing"):
        assert callable(getattr(RequestHandler, name)), name
        assert callable(getattr(ConnectionGuard, name)), name


async def test_the_guarded_handler_wraps_the_servers_request_handler() -> None:
    async def app_handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    server = web.Server(app_handler)
    assert server.request_handler is app_handler
    factory = GuardedProtocolFactory(server, request_timeout=1.0, max_connections=1)
    guard = factory()
    handler = guard.inner
    assert isinstance(handler, _JsonErrorHandler)
    assert handler._request_handler is not None and handler._request_handler is not app_handler  # the Expect check
    assert handler.transport is None  # read by GuardedProtocolFactory.release before connection_made
    await server.shutdown()


def test_app_runner_exposes_its_low_level_server() -> None:
    assert isinstance(inspect.getattr_static(web.AppRunner, "server"), property)


def test_the_response_writer_counts_what_it_sent() -> None:
    assert "output_size" in inspect.get_annotations(AbstractStreamWriter)


def test_the_parser_errors_relay_names() -> None:
    for name in (
        "BadHttpMessage",
        "BadHttpMethod",
        "BadStatusLine",
        "ContentEncodingError",
        "ContentLengthError",
        "InvalidHeader",
        "InvalidURLError",
        "LineTooLong",
        "TransferEncodingError",
    ):
        kind = getattr(http_exceptions, name)
        assert issubclass(kind, http_exceptions.HttpProcessingError), name
    assert http_exceptions.BadHttpMessage("reason").message == "reason"


async def test_client_sessions_take_middlewares() -> None:
    assert "middlewares" in inspect.signature(aiohttp.ClientSession.__init__).parameters
    assert aiohttp.ClientHandlerType is not None
    async with aiohttp.ClientSession(middlewares=()) as session:
        assert not session.closed
