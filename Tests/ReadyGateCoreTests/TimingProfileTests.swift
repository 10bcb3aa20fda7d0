import Testing

@testable import ReadyGateCore

/// Runs environment detection over a fake set of variables.
private func detect(
    _ variables: [String: String]
) throws(SettingsError) -> (environment: DeploymentEnvironment, source: String?) {
    try DeploymentEnvironment.detect { variables[$0] }
}

@Suite("Timing profiles and environment detection")
struct TimingProfileTests {
    @Test(
        "each environment has the profile of DESIGN §3",
        arguments: [
            (DeploymentEnvironment.testing, 1, 100, 20),
            (.development, 10, 200, 50),
            (.staging, 25, 500, 100),
            (.production, 25, 1000, 200),
        ]
    )
    func profile(_ environment: DeploymentEnvironment, _ base: Int, _ timeout: Int, _ cap: Int) {
        let profile = environment.profile
        #expect(profile.baseDelayMs == base)
        #expect(profile.handshakeTimeoutMs == timeout)
        #expect(profile.retryCapMs == cap)
        #expect(profile == TimingProfile(baseDelayMs: base, handshakeTimeoutMs: timeout, retryCapMs: cap))
    }

    @Test("there are exactly the four environments")
    func environments() {
        #expect(DeploymentEnvironment.allCases.map(\.rawValue) == ["testing", "development", "staging", "production"])
        #expect(DeploymentEnvironment.staging.description == "staging")
    }

    @Test("every profile is consistent: base ≤ cap < timeout")
    func profilesAreConsistent() {
        for environment in DeploymentEnvironment.allCases {
            let profile = environment.profile
            #expect(profile.baseDelayMs > 0)
            #expect(profile.baseDelayMs <= profile.retryCapMs)
            #expect(profile.retryCapMs < profile.handshakeTimeoutMs)
        }
    }

    @Test("READYGATE_ENV comes first")
    func readyGateEnvFirst() throws {
        let detected = try detect([
            "READYGATE_ENV": "testing", "ENVIRONMENT": "staging", "K_SERVICE": "svc", "KUBERNETES_SERVICE_HOST": "h",
        ])
        #expect(detected.environment == .testing)
        #expect(detected.source == "READYGATE_ENV")
    }

    @Test("a bad READYGATE_ENV is an error even when ENVIRONMENT is good")
    func badReadyGateEnvIsNotSkipped() {
        do {
            _ = try detect(["READYGATE_ENV": "prod", "ENVIRONMENT": "staging"])
            Issue.record("expected an error")
        } catch {
            #expect(error.variable == "READYGATE_ENV")
            #expect(error.value == "prod")
            #expect(error.allowed == "testing, development, staging, production")
        }
    }

    @Test("ENVIRONMENT comes next")
    func environmentNext() throws {
        let detected = try detect(["ENVIRONMENT": "staging", "K_SERVICE": "svc"])
        #expect(detected.environment == .staging)
        #expect(detected.source == "ENVIRONMENT")
        let afterEmpty = try detect(["READYGATE_ENV": "", "ENVIRONMENT": "testing"])
        #expect(afterEmpty.environment == .testing)
        #expect(afterEmpty.source == "ENVIRONMENT")
    }

    @Test("a bad ENVIRONMENT names ENVIRONMENT")
    func badEnvironment() {
        do {
            _ = try detect(["ENVIRONMENT": "qa", "K_SERVICE": "svc"])
            Issue.record("expected an error")
        } catch {
            #expect(error.variable == "ENVIRONMENT")
            #expect(error.value == "qa")
            #expect(!error.allowed.isEmpty)
        }
    }

    @Test("environment names are case-insensitive", arguments: ["PRODUCTION", "Production", "production"])
    func caseInsensitive(_ name: String) throws {
        #expect(try detect(["READYGATE_ENV": name]).environment == .production)
        #expect(try detect(["ENVIRONMENT": name]).environment == .production)
    }

    @Test("Cloud Run's K_SERVICE means production")
    func cloudRun() throws {
        let detected = try detect(["K_SERVICE": "my-service"])
        #expect(detected.environment == .production)
        #expect(detected.source == "K_SERVICE")
    }

    @Test("Kubernetes' KUBERNETES_SERVICE_HOST means production")
    func kubernetes() throws {
        let detected = try detect(["KUBERNETES_SERVICE_HOST": "10.96.0.1"])
        #expect(detected.environment == .production)
        #expect(detected.source == "KUBERNETES_SERVICE_HOST")
    }

    @Test("K_SERVICE is checked before KUBERNETES_SERVICE_HOST")
    func platformOrder() throws {
        let detected = try detect(["K_SERVICE": "svc", "KUBERNETES_SERVICE_HOST": "10.96.0.1"])
        #expect(detected.source == "K_SERVICE")
    }

    @Test("otherwise development, with no source")
    func fallback() throws {
        let detected = try detect([:])
        #expect(detected.environment == .development)
        #expect(detected.source == nil)
        let empty = try detect(["READYGATE_ENV": "", "ENVIRONMENT": "", "K_SERVICE": "", "KUBERNETES_SERVICE_HOST": ""])
        #expect(empty.environment == .development)
        #expect(empty.source == nil)
    }

    @Test("only the four variables are read, in order")
    func lookupOrder() throws {
        var asked: [String] = []
        _ = try DeploymentEnvironment.detect { name in
            asked.append(name)
            return nil
        }
        #expect(asked == ["READYGATE_ENV", "ENVIRONMENT", "K_SERVICE", "KUBERNETES_SERVICE_HOST"])
    }
}
