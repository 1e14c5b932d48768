// Plexus: the editor's built-in default graph becomes the SD1.5 demo workflow.
//
// The packaged editor (1.58) falls back to a Z-Image graph whose models Plexus does not run, so a
// user who closes every tab would land on a graph that cannot run. The editor loads its default graph
// from one shared object (exported as window.comfyAPI.defaultGraph.defaultGraph); this extension runs
// before any graph is loaded and refills that object with Plexus's demo template.
const url = new URL("../../templates/plexus_demo_sd15_txt2img.json", import.meta.url)
try {
  const response = await fetch(url, { cache: "no-cache" })
  const demo = response.ok ? await response.json() : null
  const target = window.comfyAPI?.defaultGraph?.defaultGraph
  if (demo && target && typeof target === "object") {
    for (const key of Object.keys(target)) delete target[key]
    Object.assign(target, demo)
  }
} catch (error) {
  console.warn("[Plexus] could not install the demo as the default graph:", error)
}
