import NIOCore
import NIOHTTP1
import ReadyGateCore

/// What the relay handlers of a session report. The session turns each report into an event of
/// its ``SessionStateMachine`` and performs the actions the machine returns; the handlers decide
/// nothing themselves.
protocol SessionEvents: AnyObject {
    /// A close frame from `side`'s peer went by (`code` nil: an empty close body).
    func closeFrame(from side: SessionStateMachine.Side, code: UInt16?)
    /// `side`'s peer broke RFC 6455; the watcher stopped scanning that direction.
    func protocolError(from side: SessionStateMachine.Side, _ error: WebSocketProtocolError)
    /// `side`'s peer ended its output (`gone` false: a FIN) or its connection is gone.
    func inputClosed(_ side: SessionStateMachine.Side, gone: Bool)
    /// The backend's ready message went by (message gate).
    func readyMessageSeen()
    /// The client hold now keeps `frames` complete data frames, `bytes` bytes.
    func clientFramesHeld(frames: Int, bytes: Int)
    /// The client hold reached its bound and stopped reading.
    func holdFull(bytes: Int)
    /// `side`'s peer answered the proxy's own ping (the pong was taken out of its stream).
    func ownPongReceived(from side: SessionStateMachine.Side)
    /// A data frame from the backend started reaching the client.
    func backendDataStarted()
}

/// What an ``UpstreamHandshakeHandler`` reports about its upgrade attempt.
protocol UpstreamHandshakeObserver: AnyObject {
    /// The attempt failed before an answer: refused, reset, or closed before the backend answered.
    func upstreamAttemptFailed(attempt: Int, error: String)
    /// The backend answered with a final status other than `101` (`body`: its first bytes).
    func upstreamAnsweredNon101(_ head: HTTPResponseHead, body: ByteBuffer?, attempt: Int)
    /// The backend answered `101`. `context` is the handshake handler's, for the pipeline switch.
    func upstreamAnswered101(_ head: HTTPResponseHead, context: ChannelHandlerContext, attempt: Int)
}
