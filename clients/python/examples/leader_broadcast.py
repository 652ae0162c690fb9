#!/usr/bin/env python3
"""info-beamer's p2plib example, as written for p2plib, with its import line changed.

The leader broadcasts the time every second; every device, the leader included, reports what
it receives. Run one copy per daemon (``CONSORT_API=http://127.0.0.1:7471 python3
leader_broadcast.py``). Each callback prints one JSON line on stdout (the test suite reads
them), besides the usual log line on stderr.
"""

import json
import sys
import threading
import time

from consort.p2plib import PeerGroup  # was: from p2plib import PeerGroup


def report(event, **fields):
    fields["event"] = event
    fields["t"] = time.time()
    print(json.dumps(fields), flush=True)


class ExampleGroup(PeerGroup):
    def setup_peer(self):
        self._count = 0
        report("setup_peer")

    def leader_thread(self):
        while self._leader_running:
            self._count += 1
            self.broadcast_to_all(value=time.time(), count=self._count)
            time.sleep(1)

    def promote_leader(self, peer_info):
        print("Now a leader", file=sys.stderr)
        report("promote_leader", device_id=peer_info.device_id, num_peers=self.num_peers)
        self._leader_running = True
        self._leader_thread = threading.Thread(target=self.leader_thread)
        self._leader_thread.daemon = True
        self._leader_thread.start()

    def demote_leader(self):
        print("No longer a leader", file=sys.stderr)
        report("demote_leader")
        self._leader_running = False
        self._leader_thread.join()

    def promote_follower(self, peer_info):
        report("promote_follower", device_id=peer_info.device_id, leader=self.leader.device_id)

    def demote_follower(self):
        report("demote_follower")

    def on_peer_added(self, peer_info):
        report("on_peer_added", ip=peer_info.ip, device_id=peer_info.device_id)

    def on_peer_removed(self, peer_info):
        report("on_peer_removed", ip=peer_info.ip, device_id=peer_info.device_id)

    def on_leader_message(self, message, peer_info):
        print("received message from leader %r: %r" % (peer_info, message), file=sys.stderr)
        report("on_leader_message", message=message, sender=peer_info.device_id)


if __name__ == "__main__":
    group = ExampleGroup()
    while 1:
        time.sleep(1)
