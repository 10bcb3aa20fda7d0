import Logging
import NIOCore
import NIOHTTP1
import ReadyGateCore

/// The first handler of every HTTP/1.1 connection. It reads a request head and decides:
/// a WebSocket upgrade is validated (RFC 6455 §4.2.1) and handed to a ``WebSocketSession``;
/// anything else is answered `501` until plain-HTTP forwarding exists.
final class HTTPEntryHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// A non-upgrade request: answer at its end.
        case plainRequest(HTTPRequestHead)
        /// A valid upgrade request: the session starts at its end.
        case upgradeRequested(HTTPRequestHead, HTTPHeaderList, ClientUpgradeRequest)
        /// The session owns the connection now.
        case upgrading(WebSocketSession)
        case done
    }

    private let environment: ProxyEnvironment
    private var state = State.idle

    init(environment: ProxyEnvironment) {
        self.environment = environment
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.idle, .head(let head)):
            receivedHead(head, context: context)
        case (.plainRequest(let head), .end):
            state = .done
            // NIO's decoder stops parsing after any upgrade request (and CONNECT): such a connection
            // cannot carry a next request, so it is closed.
            let canContinue = head.isKeepAlive && !head.headers.contains(name: "upgrade") && head.method != .CONNECT
            respond(
                context: context,
                status: .notImplemented,
                body: "ReadyGate does not forward plain HTTP requests yet; only WebSocket upgrades are proxied.\n",
                keepAlive: canContinue
            )
        case (.upgradeRequested(let head, let headers, let upgrade), .end):
            let session = WebSocketSession(
                environment: environment,
                request: head,
                headers: headers,
                upgrade: upgrade,
                clientContext: context
            )
            state = .upgrading(session)
            session.start()
        case (.upgrading, .end), (.plainRequest, .body), (.upgrading, .body), (.upgradeRequested, .body), (.done, _):
            break
        case (.idle, _), (.plainRequest, .head), (.upgrading, .head), (.upgradeRequested, .head):
            break
        }
    }

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let headers = HTTPHeaderList(head.headers)
        guard WebSocketHandshake.isWebSocketUpgrade(headers) else {
            state = .plainRequest(head)
            return
        }
        switch WebSocketHandshake.validateUpgrade(
            method: head.method.rawValue,
            versionMajor: head.version.major,
            versionMinor: head.version.minor,
            headers: headers
        ) {
        case .failure(let rejection):
            state = .done
            environment.logger.warning(
                "upgrade_rejected",
                metadata: [
                    "status": "\(rejection.status)", "reason": "\(rejection.reason)", "path": "\(head.uri)",
                    "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
                ]
            )
            var extra = HTTPHeaders()
            if rejection.versionHint { extra.add(name: "Sec-WebSocket-Version", value: "13") }
            respond(
                context: context,
                status: HTTPResponseStatus(statusCode: rejection.status),
                body: rejection.reason + "\n",
                keepAlive: false,
                extraHeaders: extra
            )
        case .success(let upgrade):
            state = .upgradeRequested(head, headers, upgrade)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .upgrading(let session) = state { session.clientInactiveBeforeUpgrade() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .upgrading(let session) = state {
            session.clientInactiveBeforeUpgrade()
            context.close(promise: nil)
            return
        }
        guard case .idle = state, let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        state = .done
        let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        environment.logger.warning(
            "bad_request",
            metadata: [
                "status": "\(status.code)", "error": "\(parserError)",
                "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
            ]
        )
        respond(context: context, status: status, body: "malformed HTTP request: \(parserError)\n", keepAlive: false)
    }

    /// Writes a small complete response; closes the connection unless it is kept alive.
    private func respond(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        body: String,
        keepAlive: Bool,
        extraHeaders: HTTPHeaders = HTTPHeaders()
    ) {
        let done = context.writeHTTPResponse(
            status: status,
            headers: extraHeaders,
            body: context.channel.allocator.buffer(string: body),
            contentType: plainTextContentType,
            keepAlive: keepAlive
        )
        if keepAlive {
            state = .idle
        } else {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension HTTPEntryHandler: Sendable {}
