import ReadyGateCore
import Testing

/// The record's traffic counters live in a box made when they are first set: they must still
/// behave as two plain value fields.
@Suite("Session record traffic counters")
struct SessionRecordTrafficTests {
    func record() -> SessionRecord {
        SessionRecord(id: "s-1", environment: .testing, acceptMode: .immediate, gate: .ping, path: "/ws")
    }

    func stats(frames: UInt64, bytes: UInt64) -> WebSocketTrafficStats {
        var stats = WebSocketTrafficStats()
        stats.frames = frames
        stats.messages = frames
        stats.bytes = bytes
        return stats
    }

    @Test("a new record counts nothing either way")
    func startsEmpty() {
        let record = record()
        #expect(record.clientToUpstream == WebSocketTrafficStats())
        #expect(record.upstreamToClient == WebSocketTrafficStats())
    }

    @Test("setting one direction leaves the other as it was")
    func directionsAreIndependent() {
        var record = record()
        record.upstreamToClient = stats(frames: 2, bytes: 20)
        record.clientToUpstream = stats(frames: 5, bytes: 50)
        #expect(record.upstreamToClient == stats(frames: 2, bytes: 20))
        #expect(record.clientToUpstream == stats(frames: 5, bytes: 50))
        #expect(record.summaryFields.contains { $0 == ("bytes_in", "50") })
        #expect(record.summaryFields.contains { $0 == ("bytes_out", "20") })
    }

    @Test("adding to a direction in place (a replay's counters) accumulates")
    func addInPlace() {
        var record = record()
        record.upstreamToClient.add(stats(frames: 1, bytes: 10))
        record.upstreamToClient.add(stats(frames: 3, bytes: 30))
        #expect(record.upstreamToClient.frames == 4)
        #expect(record.upstreamToClient.bytes == 40)
        #expect(record.clientToUpstream == WebSocketTrafficStats())
    }

    @Test("a copy of the record keeps its counters when the original changes")
    func copiesAreIndependent() {
        var original = record()
        original.clientToUpstream = stats(frames: 1, bytes: 10)
        let copy = original
        original.clientToUpstream.add(stats(frames: 1, bytes: 10))
        original.upstreamToClient = stats(frames: 7, bytes: 70)
        #expect(copy.clientToUpstream == stats(frames: 1, bytes: 10))
        #expect(copy.upstreamToClient == WebSocketTrafficStats())
        #expect(original.clientToUpstream.bytes == 20)
    }
}
