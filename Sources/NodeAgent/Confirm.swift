import ArgumentParser
import Reconcilers

struct Confirm: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Keep a firewall change applied with --confirm-within: disarm its revert timer.",
        discussion: "Run it from a new SSH or VPN session: that you can, proves the new ruleset lets you in."
    )

    @Option(name: .long, help: ArgumentHelp("Directory that stands for / on the node.", valueName: "DIR"))
    var root: String = "/"

    @Flag(name: .long, help: "Also forget a change that was rolled back, so the next apply tries it again.")
    var reset = false

    func run() throws {
        let state = FirewallState(host: Host.node(root: root))
        let disarmed = try state.confirm(reset: reset)
        print(disarmed ? "confirmed: the revert timer is disarmed and the new firewall stays" : "nothing to confirm: no firewall change is waiting")
    }
}
