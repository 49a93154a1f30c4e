package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/wxcombine/orderworker/pipeline"
)

func runDelete(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	var c conn
	var sf selectFlags
	c.register(fs, getenv)
	sf.register(fs, "delete")
	dry := fs.Bool("dry-run", false, "show what would be deleted; delete nothing")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	f, err := sf.selection(fs, stderr, time.Now())
	if err != nil {
		return err
	}
	t, closeConn, err := c.open()
	if err != nil {
		return err
	}
	defer closeConn()
	n := 0
	err = t.Delete(ctx, DeleteOptions{Filter: f, All: sf.all, DryRun: *dry}, func(e Entry, deleted bool) {
		n++
		action := "would_delete"
		if deleted {
			action = "deleted"
		}
		fmt.Fprintf(stdout, "%s seq=%d reason=%s combine_mchid=%s combine_out_trade_no=%s\n", action, e.Seq,
			dash(string(e.Letter.Reason)), dash(e.Letter.CombineMchID), dash(e.Letter.CombineOutTradeNo))
	})
	if *dry {
		fmt.Fprintf(stdout, "would delete %d dead letters\n", n)
	} else {
		fmt.Fprintf(stdout, "deleted %d dead letters\n", n)
	}
	return err
}

// runPause runs pause, resume and status.
func runPause(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var c conn
	c.register(fs, getenv)
	consumer := fs.String("consumer", or(getenv("CONSUMER_NAME"), pipeline.ConsumerDefault), "durable consumer of the workers (env CONSUMER_NAME)")
	bucket := fs.String("bucket", or(getenv("PAUSE_KV_BUCKET"), pipeline.PauseBucketDefault), "KV bucket of the pause switches (env PAUSE_KV_BUCKET)")
	reason := fs.String("reason", "", "why consumption is paused (pause: required)")
	by := fs.String("by", or(os.Getenv("USER"), "operator"), "who pauses")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if cmd == "pause" && *reason == "" {
		return usageErr(stderr, fs, "--reason is required: the workers log it and status shows it")
	}
	t, closeConn, err := c.open()
	if err != nil {
		return err
	}
	defer closeConn()
	switch cmd {
	case "pause":
		if err := pipeline.SetPause(ctx, t.JS, *bucket, t.jobsStream(), *consumer, pipeline.PauseState{Paused: true, Reason: *reason, By: *by}); err != nil {
			return err
		}
	case "resume":
		if err := pipeline.SetPause(ctx, t.JS, *bucket, t.jobsStream(), *consumer, pipeline.PauseState{}); err != nil {
			return err
		}
	}
	st, err := pipeline.GetPause(ctx, t.JS, *bucket, t.jobsStream(), *consumer)
	if err != nil {
		return err
	}
	if st.Paused {
		fmt.Fprintf(stdout, "paused %s/%s since %s by %s: %s\n", t.jobsStream(), *consumer, st.At.UTC().Format(time.RFC3339), dash(st.By), st.Reason)
	} else {
		fmt.Fprintf(stdout, "running %s/%s\n", t.jobsStream(), *consumer)
	}
	return nil
}
