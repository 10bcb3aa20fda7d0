import NIOCore

/// A session's timers. The handshake, gate and retry timers matter until READY or the end; the
/// close linger until both connections are closed.
///
/// A handle is nil unless its task is still queued (``WebSocketSession/arm(_:in:_:)`` clears it when
/// the task runs): NIO cancels a task by searching its loop's queue of scheduled tasks from end to
/// end, so cancelling only what is queued, and queueing nothing that outlives the session, keeps
/// both the searches and the queue short.
struct SessionTimers {
    var handshake: Scheduled<Void>?
    var gate: Scheduled<Void>?
    var retry: Scheduled<Void>?
    var linger: Scheduled<Void>?
    /// The client's connection closed while a backend connection was open: that one is closed at
    /// the latest when this fires.
    var upstreamLinger: Scheduled<Void>?
    /// Replay: when the window for a replay closes.
    var replayWindow: Scheduled<Void>?
    /// The next keepalive round and the next idle check (spliced sessions, when configured).
    var keepalive: Scheduled<Void>?
    var idleCheck: Scheduled<Void>?

    /// Nothing is armed.
    var isEmpty: Bool {
        handshake == nil && gate == nil && retry == nil && linger == nil && upstreamLinger == nil
            && replayWindow == nil && keepalive == nil && idleCheck == nil
    }

    /// Cancels the handshake, gate and retry timers. A cancelled task still holds its closure
    /// while referenced, so the handles go too.
    mutating func cancelHandshakeTimers() {
        handshake?.cancel()
        gate?.cancel()
        retry?.cancel()
        handshake = nil
        gate = nil
        retry = nil
    }

    mutating func cancelReplayWindow() {
        replayWindow?.cancel()
        replayWindow = nil
    }

    mutating func cancelAll() {
        cancelHandshakeTimers()
        cancelReplayWindow()
        keepalive?.cancel()
        keepalive = nil
        idleCheck?.cancel()
        idleCheck = nil
        linger?.cancel()
        linger = nil
        upstreamLinger?.cancel()
        upstreamLinger = nil
    }
}
