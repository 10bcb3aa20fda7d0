/// A TLS file ReadyGate cannot use: missing, unreadable, not PEM, or a key that does not belong to
/// its certificate. Names the variable and the file, so the process can refuse to start (and a
/// reload can be refused) with a message an operator can act on.
public struct TLSFileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The environment variable that named the file.
    public var variable: String
    /// The file's path, as given.
    public var path: String
    /// What is wrong with it.
    public var problem: String

    public init(variable: String, path: String, problem: String) {
        self.variable = variable
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(variable)=\(path): \(problem)" }
}
