-- Argo CD health check for withleaf.io/TrimbleConnection.
--
-- Order matters: a suspended connection is Suspended whatever its conditions say (the operator
-- changes nothing while suspended); a status for an older generation says nothing about the current
-- spec, so it is Progressing; Stalled=True needs a person, so Degraded; Ready=True is Healthy; any
-- other state (no status yet, Ready=False or Unknown without Stalled) is the operator still working,
-- so Progressing, as Flux's kstatus reads it too. One exception: Ready=False with reason
-- AwaitingGrower waits for the grower to complete a Leaf Magic Link. Nothing on the platform is
-- wrong and nothing it does will end it, so it is Suspended (Argo CD's "waiting for an external
-- event"), neither Degraded (no person on the platform side can fix it) nor Progressing (which
-- would keep a sync waiting for days).
--
-- Argo CD runs this under gopher-lua (Lua 5.1) with only the base, table, package and a reduced os
-- library opened: no `string`, no `math` (unless resource.customizations.useOpenLibs is set). Use
-- nothing else; tests/install_gitops.rs runs every case under gopher-lua with the same libraries.
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Reconciliation is suspended (spec.suspend is true)"
  return hs
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = condition(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready.reason == "AwaitingGrower" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
