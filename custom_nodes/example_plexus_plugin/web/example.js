// A minimal editor extension: listed by GET /extensions, imported by the editor as an ES module.
import { app } from "../../scripts/app.js";

app.registerExtension({
    name: "plexus.example",
    async setup() {
        console.log("[plexus example plugin] loaded");
    },
});
