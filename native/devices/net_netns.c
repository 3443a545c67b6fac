/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Moving a TAP into a named network namespace (vop/dev_net.h): one
 * RTM_NEWLINK with IFLA_NET_NS_FD over rtnetlink, the way `ip link set DEV
 * netns NAME` does it. Control path only (a link's set-up).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "vop/dev_net.h"

static bool netns_name_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > VOP_NETNS_NAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Send one request and wait for its acknowledgement: 0 or the kernel's -errno. */
static int rtnl_call(int s, struct nlmsghdr *req)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	char buf[4096];
	ssize_t n;

	if (sendto(s, req, req->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	for (;;) {
		struct nlmsghdr *h;

		n = recv(s, buf, sizeof(buf), 0);
		if (n < 0)
			return errno == EINTR ? -EINTR : -errno;
		for (h = (struct nlmsghdr *)(void *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != req->nlmsg_seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EPROTO;
				return e->error; /* 0 = ack, else -errno */
			}
		}
	}
}

int vop_net_move_netns(const char *ifname, const char *netns)
{
	char path[sizeof("/run/netns/") + VOP_NETNS_NAME_MAX];
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
		char attrs[RTA_SPACE(sizeof(uint32_t))];
	} req;
	struct rtattr *rta;
	struct timeval tv = { 5, 0 };
	unsigned ifindex;
	int nsfd, s, rc;
	uint32_t fd32;

	if (!netns_name_ok(netns))
		return -EINVAL;
	ifindex = if_nametoindex(ifname);
	if (ifindex == 0)
		return -errno;
	snprintf(path, sizeof(path), "/run/netns/%s", netns);
	nsfd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (nsfd < 0)
		return -errno;
	/* Only a network namespace (not any file an operator left there). */
	if (ioctl(nsfd, NS_GET_NSTYPE) != CLONE_NEWNET) {
		close(nsfd);
		return -EINVAL;
	}
	s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0) {
		rc = -errno;
		close(nsfd);
		return rc;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* never hang the control thread */
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.ifi));
	req.nh.nlmsg_type = RTM_NEWLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	req.nh.nlmsg_seq = 1;
	req.ifi.ifi_family = AF_UNSPEC;
	req.ifi.ifi_index = (int)ifindex;
	rta = (struct rtattr *)(void *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
	rta->rta_type = IFLA_NET_NS_FD;
	rta->rta_len = RTA_LENGTH(sizeof(fd32));
	fd32 = (uint32_t)nsfd;
	memcpy(RTA_DATA(rta), &fd32, sizeof(fd32));
	req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_SPACE(sizeof(fd32));
	rc = rtnl_call(s, &req.nh);
	close(s);
	close(nsfd);
	return rc;
}
