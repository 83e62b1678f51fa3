import Foundation
import KubeTestServer
import Testing
import TestSupport
import YAML

/// The schemas the test API server prunes by, held against the upstream CRDs they were written
/// from (a `shared/upstream` folder beside the repository, where one exists: the project keeps
/// no copy of upstream files).
@Suite struct StructuralSchemaTests {
    static let upstream = URL(fileURLWithPath: Fixtures.repository).deletingLastPathComponent().appendingPathComponent("shared/upstream/helm-controller").path

    static func crdSchema(_ file: String) throws -> StructuralSchema? {
        let path = upstream + "/" + file
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let crd = JSONValue(try YAMLParser().parseDocument(try FileReading.read(path), file: path))
        let version = try #require(crd["spec"]?["versions"]?.array?.first { $0["name"]?.string == "v1" })
        return StructuralSchema(openAPIV3Schema: try #require(version["schema"]?["openAPIV3Schema"]))
    }

    @Test(arguments: [(HelmControllerVersion.v0_16_5, "helmcharts.v0.16.5.derived.yaml", "helmchartconfigs.v0.16.5.derived.yaml"),
                      (.v0_17_1, "helmcharts.v0.17.1.yaml", "helmchartconfigs.v0.17.1.yaml")])
    func theSchemasAreUpstreams(_ version: HelmControllerVersion, _ charts: String, _ configs: String) throws {
        guard let chart = try Self.crdSchema(charts), let config = try Self.crdSchema(configs) else {
            print("skipped: no upstream CRDs at \(Self.upstream) (the check needs the shared folder beside the repository)")
            return
        }
        #expect(version.helmChart == chart, "HelmChart \(version.rawValue) differs from \(charts)")
        #expect(version.helmChartConfig == config, "HelmChartConfig \(version.rawValue) differs from \(configs)")
        // And the facts that matter, spelled out.
        guard case .object(let top) = chart, case .object(let spec)? = top["spec"] else { Issue.record("no spec"); return }
        #expect((spec["valuesSecrets"] != nil) == (version == .v0_17_1))
    }

    @Test func pruningNamesEveryUnknownFieldAndKeepsTheRest() {
        let schema = HelmControllerVersion.v0_16_5.helmChart
        let object: JSONValue = .object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
            "metadata": .object(["name": .string("x"), "anything": .string("kept: ObjectMeta is not pruned by the CRD")]),
            "spec": .object(["chart": .string("x"), "valuesSecrets": .array([]), "set": .object(["a": .string("1")]),
                             "securityContext": .object(["privileged": .bool(true), "bogus": .int(1)])]),
        ])
        let (pruned, unknown) = schema.prune(object, at: "")
        #expect(unknown.sorted() == ["spec.securityContext.bogus", "spec.valuesSecrets"])
        #expect(pruned["spec"]?["chart"]?.string == "x" && pruned["spec"]?["set"]?["a"]?.string == "1")
        #expect(pruned["spec"]?["securityContext"]?["privileged"] == .bool(true))
        #expect(pruned["metadata"]?["anything"] != nil)
    }
}
