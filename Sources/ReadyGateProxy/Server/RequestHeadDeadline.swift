import NIOCore

/// How long a client connection may wait before its next request head is complete.
///
/// Two bounds, as a load balancer in front expects of a backend:
/// - **idle** (`READYGATE_HTTP_IDLE_TIMEOUT_MS`): no byte of a request yet, on a fresh connection or
///   between keep-alive requests. Past it the connection is closed quietly. It should outlast the
///   load balancer's own keep-alive, or the balancer may send a request on a connection being closed.
/// - **header** (`READYGATE_HTTP_HEADER_TIMEOUT_MS`): from the first byte of a head to its end. Past
///   it the client gets `408` (a client trickling a head, "slowloris").
///
/// Plain values, no timer: the entry handler asks for ``deadline`` and, when its timer fires, for a
/// ``verdict(now:)``.
struct RequestHeadDeadline {
    enum Verdict: Equatable {
        /// Not yet: check again at this deadline.
        case wait(until: NIODeadline)
        /// No byte of a request arrived within the idle timeout.
        case idle
        /// A head was begun and not finished within the header timeout.
        case headTooSlow
    }

    let idleTimeout: TimeAmount
    let headerTimeout: TimeAmount
    /// Since when the connection waits for a head; nil while a request is in flight.
    private(set) var waitingSince: NIODeadline?
    /// When the first byte of the awaited head arrived.
    private(set) var headBegan: NIODeadline?

    init(idleTimeout: TimeAmount, headerTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
    }

    /// The connection is new, or its last response is complete: the next head is awaited.
    mutating func awaitHead(now: NIODeadline) {
        waitingSince = now
        headBegan = nil
    }

    /// Bytes arrived that did not complete a head.
    mutating func bytesArrived(now: NIODeadline) {
        guard waitingSince != nil, headBegan == nil else { return }
        headBegan = now
    }

    /// A whole head arrived: no deadline until the next ``awaitHead(now:)``.
    mutating func headReceived() {
        waitingSince = nil
        headBegan = nil
    }

    /// When the connection must be checked next; nil when no head is awaited.
    var deadline: NIODeadline? {
        if let headBegan { return headBegan + headerTimeout }
        return waitingSince.map { $0 + idleTimeout }
    }

    /// What is due at `now`; nil when no head is awaited.
    func verdict(now: NIODeadline) -> Verdict? {
        guard let deadline else { return nil }
        if now < deadline { return .wait(until: deadline) }
        return headBegan == nil ? .idle : .headTooSlow
    }
}
