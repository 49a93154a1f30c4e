package pipeline

// Notifications that can arrive.
//
// A notify_url that does not lead to the notifier means WeChat Pay's
// payment notifications go nowhere. With Config.NotifyURLBase (the
// notifier's public base URL, NOTIFY_URL_BASE in cmd/worker) set, the
// worker fills notify_url for jobs that omit it with
// <base>/v3/notify/<combine_mchid> (the notifier's path, see package
// notifier), and refuses a job whose notify_url is anything else: a
// prepay.failed INVALID_JOB with Field /notify_url (Final false) and a
// dead letter "invalid", before any WeChat Pay call. Without it, notify_url
// is sent as the job has it.

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/wxcombine/orderworker/wechat"
)

// notifyPath is the notifier's path prefix (notifier.PathPrefix).
const notifyPath = "/v3/notify/"

// CheckNotifyURLBase checks a NotifyURLBase: empty, or an absolute http(s)
// URL without query or fragment.
func CheckNotifyURLBase(base string) error {
	if base == "" {
		return nil
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("NotifyURLBase %q must be an absolute https URL without query, fragment or user", base)
	}
	return nil
}

// NotifyURLFor answers the notify_url of merchant mchID's orders under the
// notifier's base URL.
func NotifyURLFor(base, mchID string) string {
	return strings.TrimRight(base, "/") + notifyPath + mchID
}

// notifyURL fills or checks req's notify_url against NotifyURLBase.
func (p *Processor) notifyURL(req *wechat.CombineOrderRequest) error {
	if p.cfg.NotifyURLBase == "" {
		return nil
	}
	want := NotifyURLFor(p.cfg.NotifyURLBase, req.CombineMchID)
	switch req.NotifyURL {
	case "":
		req.NotifyURL = want
		return nil
	case want:
		return nil
	}
	return &wechat.ValidationError{Field: "/notify_url", Issue: fmt.Sprintf("must be %s (the notifier of this deployment), or absent to have it filled in", want)}
}
