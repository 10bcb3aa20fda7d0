/// A configuration value ReadyGate cannot use. Names the variable, the value and what is allowed,
/// so the process can refuse to start with a message an operator can act on (DESIGN §6).
public struct SettingsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The environment variable (or flag) that carried the value.
    public var variable: String
    /// The offending value, as given.
    public var value: String
    /// What would have been accepted.
    public var allowed: String

    public init(variable: String, value: String, allowed: String) {
        self.variable = variable
        self.value = value
        self.allowed = allowed
    }

    public var description: String {
        "invalid \(variable)=\"\(value)\": expected \(allowed)"
    }
}
