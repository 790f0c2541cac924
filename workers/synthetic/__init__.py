"""The synthetic ActivityNet-Captions-style benchmark the demo and the tests train on: `videos` generates it with
ffmpeg, `order_test` checks whether a trained model reads event order and motion direction."""
