import Foundation
import Logging
import ReadyGateCore
import ReadyGateTestSupport
import Testing

@testable import ReadyGateProxy

/// ``StructuredLogHandler``'s line formats (DESIGN §6): one JSON object per line with Cloud
/// Logging's `severity`, `message`, `time` and the event's fields, or a plain line for people.
@Suite("StructuredLogHandler lines")
struct EmbeddedStructuredLogHandlerTests {
    /// Parses one JSON line into an object, failing the test when it is not one.
    static func parse(_ line: String) throws -> [String: Any] {
        #expect(line.hasSuffix("\n"), "a log line ends with a newline")
        #expect(line.dropLast().firstIndex(of: "\n") == nil, "a log line holds no raw newline: \(line)")
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any], "not a JSON object: \(line)")
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds).
    static var rfc3339Millis: Regex<Substring> { #/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/# }

    static func date(fromRFC3339 text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.date(from: text)
    }

    @Test(
        "severity follows Cloud Logging's names",
        arguments: [
            (Logger.Level.trace, "DEBUG"), (.debug, "DEBUG"), (.info, "INFO"), (.notice, "NOTICE"),
            (.warning, "WARNING"), (.error, "ERROR"), (.critical, "CRITICAL"),
        ]
    )
    func severityMapping(level: Logger.Level, severity: String) throws {
        let object = try Self.parse(StructuredLogHandler.jsonLine(level: level, message: "m", metadata: [:]))
        #expect(object["severity"] as? String == severity)
        #expect(StructuredLogHandler.severity(level) == severity)
    }

    @Test("a JSON line carries message, time and every metadata key")
    func jsonLineFields() throws {
        let metadata: Logger.Metadata = [
            "session": "3f2a",
            "path": "/ws?room=1",
            "attempt": .stringConvertible(3),
            "negative": .stringConvertible(-42),
            "clean": .stringConvertible(true),
            "ratio": .stringConvertible(0.5),
            "codes": .array(["1000", .stringConvertible(1001)]),
            "nested": .dictionary(["b": "two", "a": .stringConvertible(1)]),
        ]
        let before = Date()
        let line = StructuredLogHandler.jsonLine(level: .info, message: "session_summary", metadata: metadata)
        let after = Date()
        let object = try Self.parse(line)

        #expect(line.hasPrefix(#"{"severity":"INFO","message":"session_summary","time":""#))
        #expect(object["message"] as? String == "session_summary")
        #expect(Set(object.keys) == Set(["severity", "message", "time"]).union(metadata.keys))
        #expect(object["session"] as? String == "3f2a")
        #expect(object["path"] as? String == "/ws?room=1")
        // Integers and booleans are JSON numbers and literals, not strings.
        #expect(line.contains(#""attempt":3"#))
        #expect(line.contains(#""negative":-42"#))
        #expect(line.contains(#""clean":true"#))
        #expect(object["ratio"] as? String == "0.5")
        let codes = try #require(object["codes"] as? [Any])
        #expect(codes.count == 2)
        #expect(codes.first as? String == "1000")
        #expect((codes.last as? NSNumber)?.intValue == 1001)
        let nested = try #require(object["nested"] as? [String: Any])
        #expect(nested["b"] as? String == "two")
        #expect((nested["a"] as? NSNumber)?.intValue == 1)

        let time = try #require(object["time"] as? String)
        #expect(time.wholeMatch(of: Self.rfc3339Millis) != nil, "time: \(time)")
        let parsed = try #require(Self.date(fromRFC3339: time), "time: \(time)")
        // The stamp has millisecond precision, truncated: allow for that below `before`.
        #expect(
            parsed >= before.addingTimeInterval(-0.002) && parsed <= after.addingTimeInterval(0.002),
            "time: \(time)"
        )
    }

    @Test("metadata keys are sorted, so equal events give equal lines")
    func metadataSorted() throws {
        let line = StructuredLogHandler.jsonLine(
            level: .debug,
            message: "m",
            metadata: ["zeta": "1", "alpha": "2", "mid": "3"]
        )
        let alpha = try #require(line.range(of: "\"alpha\""))
        let mid = try #require(line.range(of: "\"mid\""))
        let zeta = try #require(line.range(of: "\"zeta\""))
        #expect(alpha.lowerBound < mid.lowerBound && mid.lowerBound < zeta.lowerBound)
    }

    @Test("metadata named severity, message or time cannot overwrite the line's own fields")
    func reservedKeys() throws {
        let line = StructuredLogHandler.jsonLine(
            level: .error,
            message: "real",
            metadata: ["severity": "DEBUG", "message": "fake", "time": "yesterday", "other": "kept"]
        )
        let object = try Self.parse(line)
        #expect(object["severity"] as? String == "ERROR")
        #expect(object["message"] as? String == "real")
        #expect((object["time"] as? String)?.wholeMatch(of: Self.rfc3339Millis) != nil)
        #expect(object["other"] as? String == "kept")
        #expect(line.components(separatedBy: "\"message\"").count == 2, "one message key: \(line)")
    }

    @Test("quotes, backslashes, newlines and control characters are escaped")
    func escaping() throws {
        let nasty = "say \"hi\" \\ path C:\\dir\nsecond line\r\ttab \u{0}\u{1}\u{8}\u{C}\u{1F} end é ☃ 😀 \u{7F}"
        let line = StructuredLogHandler.jsonLine(
            level: .warning,
            message: nasty,
            metadata: ["key \"quoted\"\n": .string(nasty), "list": .array([.string(nasty)])]
        )
        let object = try Self.parse(line)
        #expect(object["message"] as? String == nasty)
        #expect(object["key \"quoted\"\n"] as? String == nasty)
        #expect((object["list"] as? [Any])?.first as? String == nasty)
        #expect(line.contains(#"\"hi\""#))
        #expect(line.contains(#"C:\\dir\nsecond line\r\ttab"#))
        #expect(line.contains(#"\u0000\u0001\u0008\u000c\u001f"#))
        // No control character below U+0020 is left raw, except the final newline.
        #expect(!line.dropLast().unicodeScalars.contains { $0.value < 0x20 })
    }

    @Test("appendJSONString escapes each control character as JSONSerialization reads it back")
    func everyControlCharacter() throws {
        for value in UInt32(0)..<0x20 {
            let text = "a" + String(Character(Unicode.Scalar(value)!)) + "b"
            var literal = ""
            StructuredLogHandler.appendJSONString(text, to: &literal)
            let decoded = try JSONSerialization.jsonObject(with: Data("[\(literal)]".utf8)) as? [String]
            #expect(decoded == [text], "U+\(String(value, radix: 16)): \(literal)")
        }
    }

    @Test("a text line is time, severity, message and sorted key=value pairs")
    func textLineFormat() throws {
        let before = Date()
        let line = StructuredLogHandler.textLine(
            level: .warning,
            message: "upgrade_rejected",
            metadata: ["status": "426", "path": "/ws", "attempt": .stringConvertible(2)]
        )
        let after = Date()
        #expect(line.hasSuffix("\n"))
        let parts = line.dropLast().split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        #expect(parts.count == 6, "\(line)")
        let time = try #require(parts.first)
        #expect(time.wholeMatch(of: Self.rfc3339Millis) != nil, "time: \(time)")
        let parsed = try #require(Self.date(fromRFC3339: time))
        #expect(parsed >= before.addingTimeInterval(-0.002) && parsed <= after.addingTimeInterval(0.002))
        #expect(Array(parts.dropFirst()) == ["WARNING", "upgrade_rejected", "attempt=2", "path=/ws", "status=426"])
    }

    @Test("a text line without metadata is just time, severity and message")
    func textLineWithoutMetadata() {
        let line = StructuredLogHandler.textLine(level: .info, message: "listening", metadata: [:])
        #expect(line.wholeMatch(of: #/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z INFO listening\n/#) != nil, "\(line)")
    }

    @Test("the timestamp is RFC 3339 UTC with milliseconds, close to now")
    func timestampFormat() throws {
        let before = Date()
        let stamp = StructuredLogHandler.timestamp()
        let after = Date()
        #expect(stamp.wholeMatch(of: Self.rfc3339Millis) != nil, "\(stamp)")
        let parsed = try #require(Self.date(fromRFC3339: stamp))
        #expect(parsed >= before.addingTimeInterval(-0.002) && parsed <= after.addingTimeInterval(0.002))
    }

    @Test("the handler's metadata subscript reads and writes its metadata")
    func handlerMetadata() {
        var handler = StructuredLogHandler(label: "t", format: .json, level: .info)
        handler[metadataKey: "session"] = "abc"
        #expect(handler[metadataKey: "session"] == "abc")
        #expect(handler.metadata == ["session": "abc"])
        #expect(handler.logLevel == .info)
        #expect(handler.format == .json)
    }

    /// The escaper as it was written first, over Unicode scalars: the byte-level one must give the same literal.
    static func scalarEscaped(_ text: String) -> String {
        var line = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": line += "\\\""
            case "\\": line += "\\\\"
            case "\n": line += "\\n"
            case "\r": line += "\\r"
            case "\t": line += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                line += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: line.unicodeScalars.append(scalar)
            }
        }
        return line + "\""
    }

    @Test("the byte-level escaper matches the scalar one on random text (ASCII, controls, quotes, multi-byte)")
    func escaperMatchesScalarOracle() throws {
        let alphabet: [Unicode.Scalar] = [
            "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "€", "😀",
            "\u{2028}",
        ]
        var random = SplitMix64(seed: 7)
        for _ in 0..<2000 {
            var text = ""
            for _ in 0..<Int.random(in: 0...24, using: &random) {
                text.unicodeScalars.append(alphabet[Int.random(in: 0..<alphabet.count, using: &random)])
            }
            var bytes: [UInt8] = []
            StructuredLogHandler.appendJSONString(text, to: &bytes)
            let literal = String(decoding: bytes, as: UTF8.self)
            #expect(literal == Self.scalarEscaped(text), "\(text.debugDescription)")
            let decoded = try JSONSerialization.jsonObject(with: Data("[\(literal)]".utf8)) as? [String]
            #expect(decoded == [text], "\(text.debugDescription)")
        }
    }

    @Test("an event's fields and the handler's both reach the line, the event's value winning on a shared key")
    func eventAndHandlerFields() throws {
        let fields = StructuredLogHandler.fields(
            handler: ["session": "abc", "path": "/old"],
            event: ["path": "/ws", "bytes_in": "70"]
        )
        let line = String(
            decoding: StructuredLogHandler.jsonBytes(level: .info, message: "session_summary", fields: fields),
            as: UTF8.self
        )
        let object = try Self.parse(line)
        #expect(object["session"] as? String == "abc")
        #expect(object["path"] as? String == "/ws")
        #expect(object["bytes_in"] as? String == "70")
        #expect(line.hasSuffix(#","bytes_in":"70","path":"/ws","session":"abc"}"# + "\n"), "keys sorted: \(line)")
        #expect(StructuredLogHandler.fields(handler: [:], event: nil).isEmpty)
    }
}

/// The line formats as the tests read them: strings, from a metadata dictionary.
extension StructuredLogHandler {
    static func jsonLine(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        let fields = fields(handler: [:], event: metadata)
        return String(decoding: jsonBytes(level: level, message: message, fields: fields), as: UTF8.self)
    }

    static func textLine(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        textLine(level: level, message: message, fields: fields(handler: [:], event: metadata))
    }

    static func appendJSONString(_ text: String, to line: inout String) {
        var bytes: [UInt8] = []
        appendJSONString(text, to: &bytes)
        line += String(decoding: bytes, as: UTF8.self)
    }
}
