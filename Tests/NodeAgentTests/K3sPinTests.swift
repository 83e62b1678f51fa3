import Foundation
import Testing
import TestSupport
import Reconcilers
import YAML

/// `nodeagent k3s pin`: the release's sha256sum-amd64.txt from a local HTTP server (a mirror),
/// written into a copy of the example without touching anything else.
@Suite struct K3sPinTests {
    @Test func pinWritesTheVersionAndTheBinarysChecksumAndNothingElse() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sha = String(repeating: "ab12", count: 16)
        // As GitHub publishes it: one line per asset; the amd64 binary is plain `k3s`.
        try FileManager.default.createDirectory(atPath: dir + "/srv/v1.36.1+k3s1", withIntermediateDirectories: true)
        try """
            \(String(repeating: "0f", count: 32))  k3s-airgap-images-amd64.tar.zst
            \(sha)  k3s
            \(String(repeating: "1e", count: 32))  k3s-arm64

            """.write(toFile: dir + "/srv/v1.36.1+k3s1/sha256sum-amd64.txt", atomically: true, encoding: .utf8)
        let port = TLSTestPeer.freePort()
        let server = try DetachedProcess.spawn(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir + "/srv", String(port)],
                                               output: dir + "/server.log")
        defer { DetachedProcess.stop(server) }
        for _ in 0..<400 { if TLSTestPeer.canConnect(port) { break }; try await Task.sleep(for: .milliseconds(50)) }
        let file = dir + "/platform.yaml"
        let original = try String(contentsOfFile: Fixtures.example, encoding: .utf8)
        try original.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try await Binary.run(["k3s", "pin", "v1.36.1+k3s1", "--file", file, "--download-url", "http://127.0.0.1:\(port)"])
        #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        let pinned = try String(contentsOfFile: file, encoding: .utf8)
        let p = try DesiredStateLoader.load(path: file)
        #expect(p.spec.k3s?.version.description == "v1.36.1+k3s1")
        #expect(p.spec.k3s?.sha256.hex == sha)
        // Every other line is as it was: comments, the other fields.
        let before = original.split(separator: "\n", omittingEmptySubsequences: false)
        let after = pinned.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(before.count == after.count)
        let changed = zip(before, after).filter { $0 != $1 }.map(\.1)
        #expect(changed == ["    version: v1.36.1+k3s1", "    sha256: \"\(sha)\""], "\(changed)")
        // A release the mirror does not have: exit 1, the reason, the file untouched.
        let missing = try await Binary.run(["k3s", "pin", "v1.36.9+k3s1", "--file", file, "--download-url", "http://127.0.0.1:\(port)"])
        #expect(missing.exitCode == 1 && missing.stderr.contains("404"), "\(missing.stderr)")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == pinned)
        let bad = try await Binary.run(["k3s", "pin", "1.36", "--file", file])
        #expect(bad.exitCode == 1 && bad.stderr.contains("not a K3s version"), "\(bad.stderr)")

        // A file `validate` refuses for its K3s version (valuesSecrets on v1.31.4) is exactly
        // what pin fixes; a flow mapping and CRLF line ends are kept as they are.
        let old = """
            apiVersion: nodeagent/v1\r
            kind: Platform\r
            metadata: {name: n}\r
            spec:\r
              k3s: {version: v1.31.4+k3s1, sha256: "\(String(repeating: "0", count: 64))", downloadURL: "http://127.0.0.1:\(port)"}\r
              helmReleases:\r
                - {name: db, chart: db, repo: "https://charts.example.com", version: 1.0.0, namespace: db, valuesSecrets: [{key: a, file: /etc/nodeagent/secrets/a}]}\r

            """
        try old.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await Binary.run(["validate", file]).exitCode == 1)
        let fixed = try await Binary.run(["k3s", "pin", "v1.36.1+k3s1", "--file", file])
        #expect(fixed.exitCode == 0, "\(fixed.stdout)\(fixed.stderr)")
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.contains("  k3s: {version: v1.36.1+k3s1, sha256: \"\(sha)\", downloadURL: \"http://127.0.0.1:\(port)\"}\r\n"), "\(text)")
        #expect(text.components(separatedBy: "\r\n").count == old.components(separatedBy: "\r\n").count)
        #expect(try await Binary.run(["validate", file]).exitCode == 0)
    }
}
