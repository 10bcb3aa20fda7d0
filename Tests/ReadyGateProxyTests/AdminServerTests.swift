import NIOCore
import NIOHTTP1
import ReadyGateCore
import ReadyGateDemo
import Testing

@testable import ReadyGateProxy

/// The admin listener over loopback, beside a proxy and the demo backend.
@Suite("Admin listener over loopback")
struct AdminServerTests {
    /// The demo backend, a proxy (message gate) and an admin listener on the proxy's environment.
    func withAdmin(
        backend configure: (inout DemoBackendConfiguration) -> Void = { $0.setupMs = 0 },
        _ body: (DemoBackend, ProxyFixture, AdminServer) async throws -> Void
    ) async throws {
        try await withBackendAndProxy(backend: configure, proxy: { $0.readyGate = .message }) { backend, proxy in
            let admin = try await AdminServer.start(
                address: HostAndPort(host: "127.0.0.1", port: 0),
                environment: proxy.server.environment,
                group: testGroup
            )
            do {
                try await body(backend, proxy, admin)
                try await admin.close()
            } catch {
                try? await admin.close()
                throw error
            }
        }
    }

    /// GETs `path` from the admin listener.
    func get(_ admin: AdminServer, _ path: String, method: HTTPMethod = .GET) async throws -> TestHTTPResponse {
        try #require(await TestHTTPConnection.with(port: admin.port) { try await $0.request(method, path) })
    }

    @Test("/healthz is 200; other paths 404, other methods 405, HEAD has no body")
    func health() async throws {
        try await withAdmin { _, _, admin in
            let health = try await get(admin, "/healthz")
            #expect(health.status == 200)
            #expect(health.text == "ok\n")
            #expect(try await get(admin, "/nope").status == 404)
            let post = try await get(admin, "/metrics", method: .POST)
            #expect(post.status == 405)
            #expect(post.head.headers["allow"] == ["GET, HEAD"])
            let head = try await get(admin, "/healthz", method: .HEAD)
            #expect(head.status == 200)
            #expect(head.body.readableBytes == 0)
        }
    }

    @Test("/readyz is 200 while the backend accepts connections, and 503 once draining")
    func readiness() async throws {
        try await withAdmin { _, proxy, admin in
            let ready = try await get(admin, "/readyz")
            #expect(ready.status == 200)
            #expect(ready.text == "ready\n")
            try await proxy.server.shutdown(drain: .zero, grace: .seconds(5))
            let draining = try await get(admin, "/readyz")
            #expect(draining.status == 503)
            #expect(draining.text == "draining\n")
        }
    }

    @Test("/readyz is 503 while the backend refuses connections; /healthz stays 200")
    func backendDown() async throws {
        let refused = try RefusedPort()
        let proxy = try await ProxyFixture.start(upstreamPort: refused.port)
        let admin = try await AdminServer.start(
            address: HostAndPort(host: "127.0.0.1", port: 0),
            environment: proxy.server.environment,
            group: testGroup
        )
        let down = try await get(admin, "/readyz")
        let health = try await get(admin, "/healthz")
        try await admin.close()
        try await proxy.stop()
        #expect(down.status == 503)
        #expect(down.text == "backend unreachable: http://127.0.0.1:\(refused.port)\n")
        #expect(health.status == 200)
        withExtendedLifetime(refused) {}
    }

    @Test("/metrics: sessions by end, race patterns, early frames, HTTP responses; help on every family")
    func metrics() async throws {
        // A backend that is ready 1 s after the 101: the client's first frame, sent with its
        // upgrade, is early even on a loaded machine.
        try await withAdmin(backend: { $0.setupMs = 1000 }) { _, proxy, admin in
            #expect(await earlyClientSession(port: proxy.port, message: "early") == .echoed)
            _ = try await proxy.sessions.waitFor(1)
            let plain = try await TestHTTPConnection.with(port: proxy.port) { try await $0.request(.GET, "/") }
            #expect(plain?.status == 404, "the demo backend's own answer to a plain request")
            let bad = try await rawExchange(port: proxy.port, request: "GARBAGE\r\n\r\n")
            #expect(bad.hasPrefix("HTTP/1.1 400"))

            let metrics = try await get(admin, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.head.headers["content-type"] == ["text/plain; version=0.0.4; charset=utf-8"])
            let lines = Set(metrics.text.split(separator: "\n").map(String.init))
            for expected in [
                #"readygate_sessions_total{end_reason="closed"} 1"#,
                #"readygate_sessions_total{end_reason="going_away"} 0"#,
                #"readygate_race_patterns_total{pattern="early_client_frames"} 1"#,
                "readygate_early_frames_total 1",
                "readygate_undelivered_frames_total 0",
                "readygate_upstream_connect_attempts_total 1",
                "readygate_sessions_active 0.0",
                #"readygate_http_responses_total{source="backend",code="4xx"} 1"#,
                #"readygate_http_responses_total{source="proxy",code="4xx"} 1"#,
                #"readygate_session_ready_seconds_count{gate="message"} 1"#,
                #"readygate_session_ready_seconds_count{gate="delay"} 0"#,
            ] {
                #expect(lines.contains(expected), "missing: \(expected)")
            }
            // Every family has a help line, and `/metrics` shows every family ProxyMetrics makes.
            let typed = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
            let helped = Set(lines.filter { $0.hasPrefix("# HELP ") }.map { $0.split(separator: " ")[2] })
            #expect(Set(typed) == helped)
            #expect(Set(typed.map(String.init)) == Set(ProxyMetrics.families.map(\.name)))
        }
    }
}
