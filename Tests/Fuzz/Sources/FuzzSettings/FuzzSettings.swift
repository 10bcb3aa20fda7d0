// libFuzzer target: the settings parser (`ReadyGateSettings(reader:)`) on an environment built from
// the input.
//
// Input: lines. A line `NAME=value` sets that variable; a line whose first byte is below 0x20 sets
// ReadyGate's key number `byte % count` to the rest of the line, so the fuzzer reaches real keys
// without spelling them. Lines end with `\n`.
//
// Checked: parsing returns settings or a `SettingsError`, never crashes; an error names a variable
// ReadyGate reads and the value it saw; accepted settings are inside the documented ranges, and the
// listen, admin and upstream addresses print (`check-config`) to text that parses back to them.
import Configuration
import ReadyGateCore

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

let keys = ReadyGateConfigKey.allCases

func environment(from text: Substring) -> [String: String] {
    var variables: [String: String] = [:]
    for line in text.split(separator: "\n") {
        if let first = line.unicodeScalars.first, first.value < 0x20 {
            let key = keys[Int(first.value) % keys.count]
            variables[key.rawValue] = String(line.unicodeScalars.dropFirst())
        } else if let equals = line.firstIndex(of: "=") {
            variables[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
    }
    return variables
}

func parse(_ variables: [String: String]) -> Result<ReadyGateSettings, SettingsError> {
    do throws(SettingsError) {
        return .success(
            try ReadyGateSettings(
                reader: ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: variables))
            )
        )
    } catch {
        return .failure(error)
    }
}

func checkRanges(_ settings: ReadyGateSettings) {
    check((0...65535).contains(settings.listen.port), "listen port \(settings.listen.port)")
    if let admin = settings.adminListen { check((0...65535).contains(admin.port), "admin port \(admin.port)") }
    check((1...65535).contains(settings.upstream.port), "upstream port \(settings.upstream.port)")
    check(!settings.upstream.host.isEmpty, "empty upstream host")
    check((0...60_000).contains(settings.timing.baseDelayMs), "base delay \(settings.timing.baseDelayMs)")
    check((1...600_000).contains(settings.timing.handshakeTimeoutMs), "handshake \(settings.timing.handshakeTimeoutMs)")
    check((1...60_000).contains(settings.timing.retryCapMs), "retry cap \(settings.timing.retryCapMs)")
    check((1024...(1 << 30)).contains(settings.maxBufferBytes), "buffer \(settings.maxBufferBytes)")
    check((125...(1 << 32)).contains(settings.maxMessageBytes), "message \(settings.maxMessageBytes)")
    check((0...65_536).contains(settings.httpPoolIdleMax), "pool \(settings.httpPoolIdleMax)")
    check((1...3_600_000).contains(settings.httpResponseTimeoutMs), "response timeout")
    check((1...3_600_000).contains(settings.httpIdleTimeoutMs), "idle timeout")
    check((1...3_600_000).contains(settings.httpHeaderTimeoutMs), "header timeout")
    check((0...600_000).contains(settings.drainTimeoutMs), "drain \(settings.drainTimeoutMs)")
    if let linger = settings.closeLingerMs { check((0...60_000).contains(linger), "linger \(linger)") }
    if let threads = settings.threads { check((1...256).contains(threads), "threads \(threads)") }
    if let names = settings.subprotocols {
        check(!names.isEmpty && names.allSatisfy { !$0.isEmpty && !$0.contains(",") }, "subprotocols \(names)")
    }
    check(!settings.readyMessage.isEmpty, "empty ready message")

    check(HostAndPort.parse(settings.listen.description) == settings.listen, "listen \(settings.listen) reprints")
    if let admin = settings.adminListen {
        check(HostAndPort.parse(admin.description) == admin, "admin \(admin) reprints as \(admin.description)")
    }
    let upstream = settings.upstream
    check(UpstreamTarget.parse(upstream.description) == upstream, "upstream \(upstream) reprints")
    for (variable, value) in settings.effectiveValues {
        check(ReadyGateConfigKey(rawValue: variable) != nil, "unknown variable \(variable) printed")
        check(!value.isEmpty, "\(variable) printed empty")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSettings(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let variables = environment(from: Substring(text))
    switch parse(variables) {
    case .success(let settings):
        checkRanges(settings)
    case .failure(let error):
        check(ReadyGateConfigKey(rawValue: error.variable) != nil, "error names \(error.variable)")
        check(!error.allowed.isEmpty, "error without what is allowed")
        check(!"\(error)".isEmpty, "empty error text")
    }
    _ = ReadyGateConfigKey.unknownVariables(in: variables.keys)
    return 0
}
