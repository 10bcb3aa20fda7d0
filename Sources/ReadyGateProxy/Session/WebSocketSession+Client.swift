import NIOCore
import NIOHTTP1
import ReadyGateCore

/// The client side: its accepting answer and relay handlers, or an HTTP error.
extension WebSocketSession {
    /// Sends the client its `101` and turns its pipeline into a relay half with the hold in front.
    func acceptClient() {
        guard let responder, let handshake else { return }
        self.responder = nil
        var headers = HTTPHeaders()
        if let upstreamResponse = handshake.upstreamResponse {
            // `upstream` mode: mirror the backend's end-to-end answer (subprotocol, extensions, cookies).
            let mirrored = ProxyHeaders.strippingHopByHop(HTTPHeaderList(upstreamResponse.headers))
            for field in mirrored where field.name.lowercased() != "sec-websocket-accept" {
                headers.add(name: field.name, value: field.value)
            }
        } else if let chosenSubprotocol = handshake.chosenSubprotocol {
            headers.add(name: "Sec-WebSocket-Protocol", value: chosenSubprotocol)
        }
        headers.add(name: "Sec-WebSocket-Accept", value: WebSocketHandshake.acceptValue(forKey: handshake.upgrade.key))

        let watcher = FrameWatcher(side: .client, scanner: clientScanner(), events: self)
        let hold = ClientHoldHandler(scanner: clientScanner(), maxHeldBytes: settings.maxBufferBytes, events: self)
        let glue = GlueHandler()
        if let upstreamGlue { GlueHandler.pair(glue, upstreamGlue) }
        clientWatcher = watcher
        clientHold = hold
        clientGlue = glue
        do {
            try responder.accept(headers: headers, relay: [watcher, hold, glue])
        } catch {
            logger.error("pipeline_switch_failed", metadata: ["side": "client", "error": "\(error)"])
            clientChannel.close(promise: nil)
            return
        }
        if machine.acceptMode == .upstream {
            // An HTTP/2 stream channel does not start reading when `autoRead` is turned back on (a
            // socket channel does): the read is asked for, which is harmless on a socket.
            let channel = clientChannel
            channel.setOption(ChannelOptions.autoRead, value: true).assumeIsolated().whenSuccess { channel.read() }
        }
    }

    func clientScanner() -> WebSocketFrameScanner {
        WebSocketFrameScanner(
            role: .client,
            allowedReservedBits: negotiatedReservedBits,
            maxMessageBytes: UInt64(settings.maxMessageBytes)
        )
    }

    /// RSV bits an extension negotiated in `upstream` mode (permessage-deflate uses RSV1, RFC 7692).
    var negotiatedReservedBits: UInt8 {
        guard let upstreamResponse = handshake?.upstreamResponse else { return 0 }
        return upstreamResponse.headers["Sec-WebSocket-Extensions"].isEmpty ? 0 : 0b100
    }

    /// The client has no `101`: it gets an HTTP error saying why, and its connection is closed.
    func respondWithError(status: Int, reason: SessionCloseReason) {
        guard let responder else {
            clientChannel.close(promise: nil)
            return
        }
        self.responder = nil
        let status = HTTPResponseStatus(statusCode: status)
        environment.metrics.httpResponse(status, fromBackend: false)
        responder.respond(
            status: status,
            headers: HTTPHeaders(),
            body: clientChannel.allocator.buffer(string: reason.reasonText + "\n"),
            contentType: plainTextContentType
        )
    }

    /// `upstream` accept mode: the backend's refusal goes to the client as it was.
    func relayUpstreamRejection() {
        guard let responder, let rejection = handshake?.rejection else {
            clientChannel.close(promise: nil)
            return
        }
        self.responder = nil
        var relayed = ProxyHeaders.strippingHopByHop(HTTPHeaderList(rejection.head.headers))
        relayed.remove("content-length")
        environment.metrics.httpResponse(rejection.head.status, fromBackend: false)
        responder.respond(
            status: rejection.head.status,
            headers: HTTPHeaders(relayed),
            body: rejection.body ?? clientChannel.allocator.buffer(capacity: 0),
            contentType: nil
        )
    }
}
