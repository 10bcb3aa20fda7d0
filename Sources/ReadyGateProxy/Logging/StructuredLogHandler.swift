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
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let line: String
        switch format {
        case .json: line = Self.jsonLine(level: event.level, message: "\(event.message)", metadata: merged)
        case .text: line = Self.textLine(level: event.level, message: "\(event.message)", metadata: merged)
        }
        LogOutput.emit(line)
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

    static func jsonLine(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        var line = "{\"severity\":\"\(severity(level))\",\"message\":"
        appendJSONString(message, to: &line)
        line += ",\"time\":\"\(timestamp())\""
        for key in metadata.keys.sorted() where key != "severity" && key != "message" && key != "time" {
            line += ","
            appendJSONString(key, to: &line)
            line += ":"
            appendJSON(metadata[key]!, to: &line)
        }
        line += "}\n"
        return line
    }

    static func textLine(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        var line = "\(timestamp()) \(severity(level)) \(message)"
        for key in metadata.keys.sorted() { line += " \(key)=\(metadata[key]!)" }
        return line + "\n"
    }

    private static func appendJSON(_ value: Logger.MetadataValue, to line: inout String) {
        switch value {
        case .string(let text): appendJSONString(text, to: &line)
        case .stringConvertible(let value):
            if let number = value as? any BinaryInteger {
                line += "\(number)"
            } else if let flag = value as? Bool {
                line += flag ? "true" : "false"
            } else {
                appendJSONString(value.description, to: &line)
            }
        case .array(let values):
            line += "["
            for (index, element) in values.enumerated() {
                if index > 0 { line += "," }
                appendJSON(element, to: &line)
            }
            line += "]"
        case .dictionary(let dictionary):
            line += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { line += "," }
                appendJSONString(key, to: &line)
                line += ":"
                appendJSON(dictionary[key]!, to: &line)
            }
            line += "}"
        }
    }

    /// Appends `text` as a JSON string literal (RFC 8259 §7).
    static func appendJSONString(_ text: String, to line: inout String) {
        line += "\""
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
        line += "\""
    }

    /// UTC time as RFC 3339 with milliseconds.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = time_t(now.tv_sec)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let millis = Int32(now.tv_nsec / 1_000_000)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(millis, 3))Z"
    }
}

/// Writes whole lines to stdout with one `write(2)` each, so lines from different threads never interleave.
enum LogOutput {
    static func emit(_ line: String) {
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(1, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}
