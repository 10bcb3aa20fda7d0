import Logging
import ReadyGateCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A swift-log handler that writes one line per event on stdout: a JSON object with `severity`
/// (Cloud Logging's names), `message`, `time` and the event's fields (DESIGN §6), or a plain
/// line for people when the format is `text`.
public struct StructuredLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public let format: LogFormat
    private let label: String

    public init(label: String, format: LogFormat, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let fields = Self.fields(handler: metadata, event: event.metadata)
        switch format {
        case .json: LogOutput.emit(Self.jsonBytes(level: event.level, message: "\(event.message)", fields: fields))
        case .text: LogOutput.emit(Self.textLine(level: event.level, message: "\(event.message)", fields: fields))
        }
    }

    /// The event's fields and the handler's, the event's winning on a shared key, without building a
    /// merged dictionary (a session summary has some 30 fields, logged once per session).
    static func fields(
        handler: Logger.Metadata,
        event: Logger.Metadata?
    ) -> [(key: String, value: Logger.MetadataValue)] {
        let extra = event ?? [:]
        var fields: [(key: String, value: Logger.MetadataValue)] = []
        fields.reserveCapacity(extra.count + handler.count)
        for (key, value) in extra { fields.append((key, value)) }
        for (key, value) in handler where extra[key] == nil { fields.append((key, value)) }
        return fields
    }

    /// Cloud Logging severities (`LogSeverity`) for swift-log's levels.
    static func severity(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "DEBUG"
        case .info: "INFO"
        case .notice: "NOTICE"
        case .warning: "WARNING"
        case .error: "ERROR"
        case .critical: "CRITICAL"
        }
    }

    /// One JSON line as UTF-8 bytes: `severity`, `message`, `time`, then the fields sorted by key
    /// (the three names of the line's own are not taken from the fields).
    static func jsonBytes(
        level: Logger.Level,
        message: String,
        fields: [(key: String, value: Logger.MetadataValue)]
    ) -> [UInt8] {
        var line: [UInt8] = []
        line.reserveCapacity(256 + 32 * fields.count)
        line.append(contentsOf: #"{"severity":""#.utf8)
        line.append(contentsOf: severity(level).utf8)
        line.append(contentsOf: #"","message":"#.utf8)
        appendJSONString(message, to: &line)
        line.append(contentsOf: #","time":""#.utf8)
        appendTimestamp(to: &line)
        line.append(UInt8(ascii: "\""))
        for (key, value) in fields.sorted(by: { $0.key < $1.key })
        where key != "severity" && key != "message" && key != "time" {
            line.append(UInt8(ascii: ","))
            appendJSONString(key, to: &line)
            line.append(UInt8(ascii: ":"))
            appendJSON(value, to: &line)
        }
        line.append(contentsOf: "}\n".utf8)
        return line
    }

    /// One line for people: time, severity, message, then `key=value` for each field, sorted by key.
    static func textLine(
        level: Logger.Level,
        message: String,
        fields: [(key: String, value: Logger.MetadataValue)]
    ) -> String {
        var line = "\(timestamp()) \(severity(level)) \(message)"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        return line + "\n"
    }

    private static func appendJSON(_ value: Logger.MetadataValue, to line: inout [UInt8]) {
        switch value {
        case .string(let text): appendJSONString(text, to: &line)
        case .stringConvertible(let value):
            if let number = value as? any BinaryInteger {
                line.append(contentsOf: "\(number)".utf8)
            } else if let flag = value as? Bool {
                line.append(contentsOf: (flag ? "true" : "false").utf8)
            } else {
                appendJSONString(value.description, to: &line)
            }
        case .array(let values):
            line.append(UInt8(ascii: "["))
            for (index, element) in values.enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                appendJSON(element, to: &line)
            }
            line.append(UInt8(ascii: "]"))
        case .dictionary(let dictionary):
            line.append(UInt8(ascii: "{"))
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                appendJSONString(key, to: &line)
                line.append(UInt8(ascii: ":"))
                appendJSON(dictionary[key]!, to: &line)
            }
            line.append(UInt8(ascii: "}"))
        }
    }

    /// Appends `text` as a JSON string literal (RFC 8259 §7) in UTF-8: runs of bytes that need no
    /// escape are copied as they are (a byte of a multi-byte sequence is never below 0x80).
    static func appendJSONString(_ text: String, to line: inout [UInt8]) {
        line.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            var run = 0
            for index in utf8.indices {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                line.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<index]))
                run = index + 1
                line.append(UInt8(ascii: "\\"))
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): line.append(byte)
                case UInt8(ascii: "\n"): line.append(UInt8(ascii: "n"))
                case UInt8(ascii: "\r"): line.append(UInt8(ascii: "r"))
                case UInt8(ascii: "\t"): line.append(UInt8(ascii: "t"))
                default:
                    line.append(contentsOf: "u00".utf8)
                    line.append(hexDigit(byte >> 4))
                    line.append(hexDigit(byte & 0xF))
                }
            }
            line.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...]))
        }
        line.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// UTC time as RFC 3339 with milliseconds.
    static func timestamp() -> String {
        var bytes: [UInt8] = []
        appendTimestamp(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the UTC time as RFC 3339 with milliseconds (`2026-12-07T23:27:00.123Z`).
    static func appendTimestamp(to line: inout [UInt8]) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = time_t(now.tv_sec)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int32, _ width: Int, then separator: UInt8?) {
            var divisor: Int32 = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = max(0, value)
            while divisor > 0 {
                line.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
                rest %= divisor
                divisor /= 10
            }
            if let separator { line.append(separator) }
        }
        digits(parts.tm_year + 1900, 4, then: UInt8(ascii: "-"))
        digits(parts.tm_mon + 1, 2, then: UInt8(ascii: "-"))
        digits(parts.tm_mday, 2, then: UInt8(ascii: "T"))
        digits(parts.tm_hour, 2, then: UInt8(ascii: ":"))
        digits(parts.tm_min, 2, then: UInt8(ascii: ":"))
        digits(parts.tm_sec, 2, then: UInt8(ascii: "."))
        digits(Int32(now.tv_nsec / 1_000_000), 3, then: UInt8(ascii: "Z"))
    }
}

/// Writes whole lines to stdout with one `write(2)` each, so lines from different threads never interleave.
enum LogOutput {
    static func emit(_ line: String) {
        var line = line
        line.withUTF8 { writeAll($0) }
    }

    static func emit(_ line: [UInt8]) {
        line.withUnsafeBufferPointer { writeAll($0) }
    }

    private static func writeAll(_ bytes: UnsafeBufferPointer<UInt8>) {
        var offset = 0
        while offset < bytes.count {
            let written = write(1, bytes.baseAddress! + offset, bytes.count - offset)
            if written <= 0 { return }
            offset += written
        }
    }
}
