/// What `readygate analyze` takes from one `session_summary` line (``SessionRecord/summaryFields``).
public struct SessionSummary: Sendable, Equatable {
    public var session: String
    public var environment: String
    public var gate: String
    /// ``SessionCloseReason/name``, or `-` when no side failed (a peer closed).
    public var endReason: String
    /// The client's close code, `-` without a close frame.
    public var clientCloseCode: String
    /// Milliseconds from the request to READY (`t_ready_for_messages_ms`); nil when never ready.
    public var readyAtMs: Int?
    public var patterns: [String]
    /// Replays of the backend session (absent before replay existed: 0).
    public var replays: Int

    public init(
        session: String,
        environment: String,
        gate: String,
        endReason: String,
        clientCloseCode: String,
        readyAtMs: Int?,
        patterns: [String],
        replays: Int = 0
    ) {
        self.session = session
        self.environment = environment
        self.gate = gate
        self.endReason = endReason
        self.clientCloseCode = clientCloseCode
        self.readyAtMs = readyAtMs
        self.patterns = patterns
        self.replays = replays
    }

    /// Nil when a field every summary has is missing.
    public init?(_ line: LogLine) {
        guard line.message == "session_summary",
            let session = line.string("session"),
            let environment = line.string("environment"),
            let gate = line.string("gate"),
            let endReason = line.string("end_reason"),
            let clientCloseCode = line.string("client_close_code"),
            let patterns = line.string("patterns")
        else { return nil }
        let readyKey = "t_\(SessionState.readyForMessages.rawValue.lowercased())_ms"
        if line.fields[readyKey] != nil, line.int(readyKey) == nil { return nil }
        if line.fields["replays"] != nil, line.int("replays") == nil { return nil }
        self.init(
            session: session,
            environment: environment,
            gate: gate,
            endReason: endReason,
            clientCloseCode: clientCloseCode,
            readyAtMs: line.int(readyKey),
            patterns: patterns.split(separator: ",").map(String.init),
            replays: line.int("replays") ?? 0
        )
    }
}

/// A race pattern's own log event (its message is the pattern's name).
public struct PatternEvent: Sendable, Equatable {
    public var session: String
    public var pattern: String
    /// `upstream_error_after_ready`: how long after READY the backend failed.
    public var msAfterReady: Int?

    public init(session: String, pattern: String, msAfterReady: Int? = nil) {
        self.session = session
        self.pattern = pattern
        self.msAfterReady = msAfterReady
    }

    /// Nil when the line is not a pattern event, or names no session.
    public init?(_ line: LogLine) {
        guard RacePattern(rawValue: line.message) != nil, let session = line.string("session") else { return nil }
        self.init(session: session, pattern: line.message, msAfterReady: line.int("ms_after_ready"))
    }
}

/// An `upstream_replay` event: the proxy opened a new backend session for a client.
public struct ReplayEvent: Sendable, Equatable {
    public var session: String
    public var attempt: Int?
    public var reason: String

    public init(session: String, attempt: Int?, reason: String) {
        self.session = session
        self.attempt = attempt
        self.reason = reason
    }

    public init?(_ line: LogLine) {
        guard line.message == "upstream_replay",
            let session = line.string("session_id") ?? line.string("session"),
            let reason = line.string("reason")
        else { return nil }
        self.init(session: session, attempt: line.int("attempt"), reason: reason)
    }
}

/// A `gate_delay_changed` event: the adaptive delay moved.
public struct DelayChange: Sendable, Equatable {
    public var time: String
    public var upstream: String?
    public var oldMs: Int
    public var newMs: Int
    /// Why: `upstream_error_after_ready` (grew) or `clean_sessions` (decayed).
    public var reason: String

    public init(time: String, upstream: String?, oldMs: Int, newMs: Int, reason: String) {
        self.time = time
        self.upstream = upstream
        self.oldMs = oldMs
        self.newMs = newMs
        self.reason = reason
    }

    public init?(_ line: LogLine) {
        guard line.message == "gate_delay_changed",
            let oldMs = line.int("old_ms"),
            let newMs = line.int("new_ms"),
            let reason = line.string("reason")
        else { return nil }
        self.init(time: line.time, upstream: line.string("upstream"), oldMs: oldMs, newMs: newMs, reason: reason)
    }
}

/// The proxy's `listening` line: the settings it ran with.
public struct ProxyStart: Sendable, Equatable {
    public var environment: String?
    public var gate: String?
    public var baseDelayMs: Int?
    public var handshakeTimeoutMs: Int?

    public init(environment: String?, gate: String?, baseDelayMs: Int?, handshakeTimeoutMs: Int?) {
        self.environment = environment
        self.gate = gate
        self.baseDelayMs = baseDelayMs
        self.handshakeTimeoutMs = handshakeTimeoutMs
    }

    public init?(_ line: LogLine) {
        guard line.message == "listening" else { return nil }
        self.init(
            environment: line.string("environment"),
            gate: line.string("ready_gate"),
            baseDelayMs: line.int("base_delay_ms"),
            handshakeTimeoutMs: line.int("handshake_timeout_ms")
        )
    }
}
