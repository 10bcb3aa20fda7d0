import Testing

@testable import ReadyGateCore

private func makeRecord() -> SessionRecord {
    SessionRecord(id: "s-1", environment: .testing, acceptMode: .immediate, gate: .delay, path: "/ws")
}

private func summaryMap(_ record: SessionRecord) -> [String: String] {
    Dictionary(record.summaryFields, uniquingKeysWith: { first, _ in first })
}

@Suite("RaceDetector thresholds")
struct RaceDetectorTests {
    @Test("the slow-handshake threshold is half the handshake timeout, at least 1 ms")
    func slowThreshold() {
        #expect(RaceDetector(timing: DeploymentEnvironment.testing.profile).slowHandshakeThresholdMs == 50)
        #expect(RaceDetector(timing: DeploymentEnvironment.development.profile).slowHandshakeThresholdMs == 100)
        #expect(RaceDetector(timing: DeploymentEnvironment.production.profile).slowHandshakeThresholdMs == 500)
        let tiny = RaceDetector(timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 1, retryCapMs: 1))
        #expect(tiny.slowHandshakeThresholdMs == 1)
        let odd = RaceDetector(timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 101, retryCapMs: 1))
        #expect(odd.slowHandshakeThresholdMs == 50)
    }

    @Test("the error-after-ready window is the handshake timeout, or ten base delays when longer")
    func window() {
        #expect(RaceDetector(timing: DeploymentEnvironment.testing.profile).errorAfterReadyWindowMs == 100)
        #expect(RaceDetector(timing: DeploymentEnvironment.production.profile).errorAfterReadyWindowMs == 1000)
        let slowGate = RaceDetector(timing: TimingProfile(baseDelayMs: 500, handshakeTimeoutMs: 1000, retryCapMs: 200))
        #expect(slowGate.errorAfterReadyWindowMs == 5000)
        let edge = RaceDetector(timing: TimingProfile(baseDelayMs: 100, handshakeTimeoutMs: 1000, retryCapMs: 200))
        #expect(edge.errorAfterReadyWindowMs == 1000)
    }

    @Test("the detector keeps the timing it was given")
    func timing() {
        let profile = DeploymentEnvironment.staging.profile
        #expect(RaceDetector(timing: profile).timing == profile)
    }
}

@Suite("SessionRecord")
struct SessionRecordTests {
    @Test("note records each pattern once, in order")
    func noteDedups() {
        var record = makeRecord()
        let answers = [
            record.note(.earlyClientFrames), record.note(.upstreamConnectRetry), record.note(.earlyClientFrames),
            record.note(.bufferBackpressure), record.note(.upstreamConnectRetry),
        ]
        #expect(answers == [true, true, false, true, false])
        #expect(record.patterns == [.earlyClientFrames, .upstreamConnectRetry, .bufferBackpressure])
    }

    @Test("every pattern can be noted once", arguments: RacePattern.allCases)
    func noteEach(_ pattern: RacePattern) {
        var record = makeRecord()
        let first = record.note(pattern)
        let second = record.note(pattern)
        #expect(first)
        #expect(!second)
        #expect(record.patterns == [pattern])
    }

    @Test("pattern names are DESIGN §4's")
    func patternNames() {
        #expect(
            RacePattern.allCases.map(\.description) == [
                "early_client_frames", "upstream_connect_retry", "upstream_slow_handshake", "upstream_rejected",
                "ready_timeout", "upstream_error_after_ready", "client_gone_before_ready", "buffer_backpressure",
            ]
        )
        #expect(RaceEvent(.readyTimeout).fields.isEmpty)
    }

    @Test("the summary's fields come in a stable order")
    func summaryOrder() {
        var record = makeRecord()
        record.stateTimes = [
            .initializing: 0, .handshakePending: 1, .connected: 10, .readyForMessages: 30, .closed: 900,
        ]
        record.upstreamStatus = 101
        record.undeliveredFrames = 1
        record.undeliveredBytes = 5
        #expect(
            record.summaryFields.map(\.0) == [
                "session", "environment", "accept_mode", "gate", "path", "t_initializing_ms",
                "t_handshake_pending_ms", "t_connected_ms", "t_ready_for_messages_ms", "t_closed_ms", "frames_in",
                "bytes_in", "messages_in", "frames_out", "bytes_out", "messages_out", "early_frames", "early_bytes",
                "peak_held_bytes", "connect_attempts", "replays", "client_close_code", "upstream_close_code",
                "closed_by",
                "end_reason", "patterns", "upstream_status", "undelivered_frames", "undelivered_bytes",
            ]
        )
    }

    @Test("the summary carries the session's facts")
    func summary() {
        var record = makeRecord()
        record.stateTimes = [.initializing: 0, .handshakePending: 1, .readyForMessages: 30, .closed: 900]
        record.clientToUpstream.frames = 7
        record.clientToUpstream.bytes = 700
        record.clientToUpstream.messages = 6
        record.upstreamToClient.frames = 3
        record.upstreamToClient.bytes = 300
        record.upstreamToClient.messages = 2
        record.earlyFrames = 2
        record.earlyBytes = 40
        record.peakHeldBytes = 40
        record.connectAttempts = 3
        record.closer = .client
        record.endReason = .upstreamNotReady
        record.upstreamStatus = 101
        record.note(.earlyClientFrames)
        record.note(.upstreamConnectRetry)
        let fields = summaryMap(record)
        #expect(fields.count == record.summaryFields.count)
        #expect(fields["session"] == "s-1")
        #expect(fields["environment"] == "testing")
        #expect(fields["accept_mode"] == "immediate")
        #expect(fields["gate"] == "delay")
        #expect(fields["path"] == "/ws")
        #expect(fields["t_initializing_ms"] == "0")
        #expect(fields["t_handshake_pending_ms"] == "1")
        #expect(fields["t_ready_for_messages_ms"] == "30")
        #expect(fields["t_closed_ms"] == "900")
        #expect(fields["t_connected_ms"] == nil)
        #expect(fields["t_error_ms"] == nil)
        #expect(fields["frames_in"] == "7")
        #expect(fields["bytes_in"] == "700")
        #expect(fields["messages_in"] == "6")
        #expect(fields["frames_out"] == "3")
        #expect(fields["bytes_out"] == "300")
        #expect(fields["messages_out"] == "2")
        #expect(fields["early_frames"] == "2")
        #expect(fields["early_bytes"] == "40")
        #expect(fields["peak_held_bytes"] == "40")
        #expect(fields["connect_attempts"] == "3")
        #expect(fields["closed_by"] == "client")
        #expect(fields["end_reason"] == "upstream_not_ready")
        #expect(fields["patterns"] == "early_client_frames,upstream_connect_retry")
        #expect(fields["upstream_status"] == "101")
        #expect(fields["undelivered_frames"] == nil)
        #expect(fields["undelivered_bytes"] == nil)
    }

    @Test("a fresh record's summary: no close frames, no end reason, no patterns")
    func summaryFresh() {
        let fields = summaryMap(makeRecord())
        #expect(fields["client_close_code"] == "-")
        #expect(fields["upstream_close_code"] == "-")
        #expect(fields["closed_by"] == "none")
        #expect(fields["end_reason"] == "-")
        #expect(fields["patterns"] == "")
        #expect(fields["upstream_status"] == nil)
        #expect(fields["undelivered_frames"] == nil)
    }

    @Test(
        "close codes: '-' without a close frame, '1005' for an empty close body, else the code",
        arguments: [
            (false, UInt16?.none, "-"),
            (true, nil, "1005"),
            (true, 1000, "1000"),
            (true, 1011, "1011"),
            (true, 4999, "4999"),
        ]
    )
    func closeCodes(_ sent: Bool, _ code: UInt16?, _ expected: String) {
        var client = makeRecord()
        client.clientSentClose = sent
        client.clientCloseCode = code
        #expect(summaryMap(client)["client_close_code"] == expected)
        #expect(summaryMap(client)["upstream_close_code"] == "-")

        var upstream = makeRecord()
        upstream.upstreamSentClose = sent
        upstream.upstreamCloseCode = code
        #expect(summaryMap(upstream)["upstream_close_code"] == expected)
        #expect(summaryMap(upstream)["client_close_code"] == "-")
    }

    @Test("undelivered frames appear in the summary only when there were some")
    func summaryUndelivered() {
        var record = makeRecord()
        record.undeliveredFrames = 3
        record.undeliveredBytes = 99
        let fields = summaryMap(record)
        #expect(fields["undelivered_frames"] == "3")
        #expect(fields["undelivered_bytes"] == "99")
        #expect(record.summaryFields.suffix(2).map(\.0) == ["undelivered_frames", "undelivered_bytes"])
    }

    @Test("closers and end reasons are named for the summary")
    func closerAndReasonNames() {
        var record = makeRecord()
        for (closer, name) in [(SessionRecord.Closer.client, "client"), (.upstream, "upstream"), (.proxy, "proxy")] {
            record.closer = closer
            #expect(summaryMap(record)["closed_by"] == name)
        }
        record.endReason = .internalError
        #expect(summaryMap(record)["end_reason"] == "internal_error")
        record.endReason = .clientProtocolError(WebSocketProtocolError(.invalidCloseReason))
        #expect(summaryMap(record)["end_reason"] == "client_protocol_error")
    }
}
