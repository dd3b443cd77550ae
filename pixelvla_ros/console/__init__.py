"""The operator's console: a web page to watch the camera and the policy, and to prompt, instruct and stop it.

No ROS here (the node, pixelvla_ros/nodes/console_node.py, feeds it): `state` holds what the page shows and the
decisions about it (who may operate, rates, status summaries), `prompts` builds prompts from clicks and drags,
`security` checks the access token and where requests come from, `server` serves the page and its WebSocket
(aiohttp), `bench` measures camera-to-screen latency. The page itself is `static/` (no CDN, no build step).
"""
